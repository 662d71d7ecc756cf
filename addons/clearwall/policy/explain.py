"""What the rules do with one request, offline: the decision and every rule consulted, in order.

The same pure pieces the proxy runs, in the proxy's order: deny entries and destinations
(`engine.decide`), the request body cap, content filters on request.url, request.headers and
request.body (`content.inspect`), then the rate limits the request would count against
(`policy.limits`; no token is taken — buckets are live state, not rules). `rules explain` prints
an `Outcome`; `rules test` compares it with a case's expectation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from clearwall.content.inspect import Inspection, inspect_body, inspect_text
from clearwall.content.scanner import Scanner
from clearwall.content.spec import FilterSpec
from clearwall.policy import mcp as rpc
from clearwall.policy.decision import STATUS, Refusal, Step
from clearwall.policy.engine import Target, decide
from clearwall.policy.hosts import normalize_host
from clearwall.policy.limits import LimitIndex
from clearwall.policy.ruleset import DEFAULT_PORTS, RuleSet

# Headers that carry credentials by design are not scanned (as in the proxy's content addon).
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
                                "x-auth-token", "cookie", "set-cookie"})
SIZE_RULE = "size-limit"


@dataclass(frozen=True)
class Request:
    url: str
    method: str = "GET"
    client: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class Outcome:
    action: str  # allowed | redacted | would_block | blocked
    status: int
    refusal: Refusal | None
    destination: str | None
    steps: tuple[Step, ...]
    rate_limits: tuple[str, ...] = ()
    would_block: tuple[str, ...] = ()
    filters: tuple[str, ...] = field(default=())  # every filter that matched, in file order

    def as_dict(self) -> dict:
        """The comparable fields, as a case's `expect:` writes them."""
        return {
            "action": self.action,
            "status": self.status,
            "kind": self.refusal.kind if self.refusal else None,
            "rule": self.refusal.rule if self.refusal else None,
            "destination": self.destination,
            "filters": list(self.filters),
            "rate_limits": list(self.rate_limits),
            "would_block": list(self.would_block),
        }


def parse_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an absolute http(s) URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"URL {url!r} is not an absolute http:// or https:// URL")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"URL {url!r} has an invalid port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, path


def scanner_for(rules: RuleSet) -> Scanner:
    specs = [FilterSpec(f.name, f.pattern, frozenset(f.where), f.action, f.mode or rules.settings.mode, f.validate_)
             for f in rules.filters]
    return Scanner(specs, timeout=max(rules.settings.scan_timeout, 1.0))  # offline: no latency budget


def _ordered_trace(rules: RuleSet, host: str, port: int, scheme: str, trace: tuple[Step, ...]) -> list[Step]:
    """The engine's trace with the deny entries it passed over silently put back in file order,
    so the output lists every rule consulted."""
    try:
        h = normalize_host(host)
    except ValueError:
        return list(trace)
    rest = list(trace)
    out: list[Step] = []
    for e in rules.deny:
        if e.matches_host(h, port, scheme):
            out += [s for s in rest if s.rule == e.name and s.section in ("decision", "report")][:1]
            rest = [s for s in rest if s not in out]
        else:
            out.append(Step(e.name, "deny", "skipped", "host or port differ"))
    return out + rest


def _filter_steps(rules: RuleSet, results: dict[str, Inspection]) -> tuple[list[Step], list[str]]:
    steps, hits = [], []
    for f in rules.filters:
        where = sorted({m.target.split("|")[0] + (" (decoded)" if "|" in m.target else "")
                        for r in results.values() for m in r.matches if m.filter == f.name})
        if where:
            hits.append(f.name)
            mode = f.mode or rules.settings.mode
            steps.append(Step(f.name, "filter", "matched", f"{f.action}{' (report mode)' if mode == 'report' else ''} "
                              f"in {', '.join(where)}"))
        else:
            looked = ", ".join(t for t in f.where if t in results)
            steps.append(Step(f.name, "filter", "no match", f"looked in {looked}") if looked else
                         Step(f.name, "filter", "n/a", f"applies to {', '.join(f.where)}: not in this request"))
    return steps, hits


def evaluate(rules: RuleSet, req: Request) -> Outcome:
    """Decide `req` as the proxy would; ValueError for a malformed URL or an unknown client."""
    scheme, host, port, path = parse_url(req.url)
    if req.client is not None and req.client not in {c.name for c in rules.clients}:
        known = ", ".join(c.name for c in rules.clients) or "none defined"
        raise ValueError(f"client {req.client!r} is not defined in the rules (clients: {known})")
    steps: list[Step] = [Step(req.client, "client", "given", "") if req.client else
                         Step("(unidentified)", "client", "none", "only destinations without `clients:` apply")]
    tools: tuple[str, ...] = ()
    if req.body:
        try:
            parsed = rpc.parse_body(req.body)
            tools = parsed.tools if parsed is not None else ()
        except ValueError as e:
            steps.append(Step("(mcp)", "mcp", "malformed", f"body claims JSON-RPC but cannot be read: {e}; "
                              "an MCP destination refuses it"))
        if tools:
            steps.append(Step("(mcp)", "mcp", "tools/call", ", ".join(tools)))
    target = Target(host, port, scheme, req.client, req.method.upper(), path, req.header("content-type"),
                    bool(req.body), tools)
    d = decide(rules, target, explain=True)
    steps += _ordered_trace(rules, host, port, scheme, d.trace)
    waived = [r.rule for r in d.would_block]

    names: tuple[str, ...] = ()

    def done(refusal: Refusal | None, action: str | None = None, **kw) -> Outcome:
        act = action or ("blocked" if refusal else ("would_block" if waived else "allowed"))
        status = STATUS[refusal.kind] if refusal else 200
        return Outcome(act, status, refusal, d.destination, tuple(steps),
                       would_block=tuple(dict.fromkeys(waived)), rate_limits=names, **kw)

    if d.refusal is not None:
        return done(d.refusal)
    # The proxy takes rate-limit tokens when the request's headers arrive, before bodies are read.
    limits = LimitIndex(rules).matching(req.client, d.destination)
    for spec in limits:
        steps.append(Step(spec.name, "rate_limit", "counts", f"{spec.requests} per {spec.per:g}s, burst {spec.burst}, "
                          f"key {spec.key}{', report mode' if spec.mode == 'report' else ''}: one token"))
    names = tuple(s.name for s in limits)
    dest = rules.destination(d.destination) if d.destination else None
    cap = dest.request_cap if dest else rules.settings.limits.request_body
    if cap is not None and len(req.body) > cap:
        steps.append(Step(d.destination or SIZE_RULE, "limit", "refused", f"body of {len(req.body)} bytes is over {cap}"))
        return done(Refusal("request_too_large", d.destination or SIZE_RULE,
                            f"request body of {len(req.body)} bytes is over the {cap}-byte cap"))
    redacted, filters = False, ()
    if rules.filters:
        scanner = scanner_for(rules)
        heads = "\n".join(f"{k}: {v}" for k, v in req.headers if k.lower() not in CREDENTIAL_HEADERS)
        results = {"request.url": inspect_text(scanner, "request.url", req.url),
                   "request.headers": inspect_text(scanner, "request.headers", heads)}
        if req.body:
            results["request.body"] = inspect_body(scanner, "request.body", req.body,
                                                   content_type=req.header("content-type"),
                                                   content_encoding=req.header("content-encoding"),
                                                   max_size=cap if cap is not None else 1 << 40)
        fsteps, hits = _filter_steps(rules, results)
        steps += fsteps
        filters = tuple(hits)
        for where, r in results.items():
            waived += r.would_block
            if r.error:
                kind = "request_too_large" if r.error == "too_large" else "inspection_error"
                return done(Refusal(kind, d.destination or SIZE_RULE, f"{where} could not be inspected ({r.error})"),
                            filters=filters)
            if r.blocked_by:
                return done(Refusal("content_blocked", r.blocked_by, f"{where} matched filter {r.blocked_by}"),
                            filters=filters)
            redacted = redacted or r.redacted is not None
    action = None if waived or not redacted else "redacted"
    return done(None, action, filters=filters)
