"""Human-readable rendering of records, stats and verification results for the CLI."""

from __future__ import annotations

from clearwall.audit.reader import get


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


HEADER = f"{'TIME':<24} {'ACTION':<12} {'STATUS':>6} {'CLIENT':<16} {'METHOD':<7} {'URL':<60} RULES"


def row(record: dict) -> str:
    """One line per record: time, decision, status, client, method, URL or host, rules."""
    status = get(record, "http.response.status_code")
    client = get(record, "labels.client") or get(record, "client.user.name") or get(record, "client.ip") or "-"
    url = get(record, "url.full") or get(record, "destination.domain") or get(record, "destination.ip") or "-"
    rules = ",".join(get(record, "rule.name") or []) or "-"
    reason = get(record, "event.reason")
    if reason:
        rules = f"{rules} ({reason})"
    return (
        f"{str(record.get('@timestamp', '-')):<24} {str(get(record, 'event.action') or '-'):<12} "
        f"{str(status if status is not None else '-'):>6} {_clip(str(client), 16):<16} "
        f"{str(get(record, 'http.request.method') or '-'):<7} {_clip(str(url), 60):<60} {rules}"
    )


def _counter_lines(title: str, pairs: list) -> list[str]:
    if not pairs:
        return [f"{title}: none"]
    width = max(len(str(k)) for k, _ in pairs)
    return [f"{title}:"] + [f"  {str(k):<{width}}  {v:>8}" for k, v in pairs]


def stats_text(d: dict) -> str:
    lines = [
        f"records          {d['records']:>8}   ({d['first'] or '-'} .. {d['last'] or '-'})",
        f"allowed          {d['allowed']:>8}",
        f"blocked          {d['blocked']:>8}",
        f"would_block      {d['would_block']:>8}",
        f"redacted         {d['redacted']:>8}",
        f"rate_limited     {d['rate_limited']:>8}",
        f"auth failures    {d['auth_failures']:>8}",
        f"upstream errors  {d['upstream_errors']:>8}",
        "",
    ]
    lines += _counter_lines("top rules", d["top_rules"])
    lines += _counter_lines("top clients", d["top_clients"])
    lines += _counter_lines("top hosts", d["top_hosts"])
    return "\n".join(lines)


def verify_text(d: dict) -> str:
    start = {"genesis": "from the genesis hash", "retention": "from the files deleted by retention", "empty": "(empty log)"}[d["start"]]
    if d["ok"]:
        return f"OK: {d['records']} records in {d['files']} file(s) chain {start}; head {d['head']}"
    lines = [f"BROKEN: {len(d['breaks'])} problem(s) in {d['records']} records, {d['files']} file(s); first:"]
    for b in d["breaks"]:
        ident = f" (event.id {b['event_id']})" if b["event_id"] else ""
        lines.append(f"  {b['file']}:{b['line']}{ident}: {b['problem']}")
    return "\n".join(lines)
