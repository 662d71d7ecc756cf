"""Destination rules proposed from logged traffic (`clearwall rules suggest`).

Typical use: run a new MCP server behind Clearwall in report mode, then turn what it actually
did into an allowlist to review. The proposal is exact, never wider than the traffic seen: one
destination per host and port and per set of methods, listing the exact (normalised) paths
seen with those methods, so a path observed only with GET is not opened to POST. Broadening
(`/repos/*/issues`, `**`) is left to the reviewer.

Counted: exchanges the proxy let through or would have refused only in report mode (allowed,
redacted, would_block, rate_limited). Refused exchanges are not proposed — a refusal in
enforce mode is a decision someone already made.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from clearwall.policy.hosts import normalize_host
from clearwall.policy.paths import PathRefused, normalize_path
from clearwall.policy.ruleset import DEFAULT_PORTS

OBSERVED_ACTIONS = {"allowed", "redacted", "would_block", "rate_limited"}
MAX_NAME = 60


@dataclass(frozen=True)
class Observation:
    scheme: str
    host: str
    port: int
    method: str
    path: str


def observation(record: dict, client: str | None = None) -> Observation | None:
    """What one log record says was requested; None for records a proposal must not cover."""
    event = record.get("event") or {}
    if event.get("action") not in OBSERVED_ACTIONS:
        return None
    if client is not None and (record.get("labels") or {}).get("client") != client:
        return None
    method = ((record.get("http") or {}).get("request") or {}).get("method")
    url = (record.get("url") or {}).get("full")
    if not isinstance(method, str) or not isinstance(url, str) or method == "CONNECT" or not re.fullmatch(r"[A-Z]+", method):
        return None
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        host = normalize_host(parts.hostname)
        path = normalize_path(parts.path or "/")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except (ValueError, PathRefused):
        return None
    if "*" in path:  # a literal * would read as a glob and widen the rule
        return None
    return Observation(parts.scheme, host, port, method, path)


def _name(host: str, port: int, scheme: str, methods: frozenset[str], several: bool, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-.") or "destination"
    if port != DEFAULT_PORTS[scheme]:
        base += f"-{port}"
    if several:
        base += "-" + "-".join(sorted(m.lower() for m in methods))
    base = base[:MAX_NAME]
    name, n = base, 2
    while name in used:
        name, n = f"{base[:MAX_NAME - 4]}-{n}", n + 1
    used.add(name)
    return name


def propose(observations: Iterable[Observation]) -> list[dict]:
    """Destination entries (plain dicts in rule-file form) covering exactly the observations."""
    by_target: dict[tuple[str, str, int], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for o in observations:
        by_target[(o.host, o.scheme, o.port)][o.path].add(o.method)
    out, used = [], set()
    for (host, scheme, port), paths in sorted(by_target.items()):
        groups: dict[frozenset[str], list[str]] = defaultdict(list)
        for path, methods in paths.items():
            groups[frozenset(methods)].append(path)
        for methods, group in sorted(groups.items(), key=lambda g: sorted(g[0])):
            entry: dict = {"name": _name(host, port, scheme, methods, len(groups) > 1, used), "hosts": [host]}
            entry["ports"] = [port]  # explicit: an omitted port means 443 *and* 80, wider than seen
            entry["methods"] = sorted(methods)
            entry["paths"] = sorted(group)
            out.append(entry)
    return out


def suggest_yaml(records: Iterable[dict], client: str | None = None, source: str = "") -> tuple[str, int]:
    """(rule-file text, number of records used)."""
    used = 0

    def observed():  # streamed: a log of millions of records is never held in memory
        nonlocal used
        for r in records:
            o = observation(r, client)
            if o is not None:
                used += 1
                yield o

    destinations = propose(observed())
    head = [f"# Proposed by `clearwall rules suggest` from {used} logged request(s){' in ' + source if source else ''}"
            + (f" by client {client}" if client else "") + ".",
            "# Exact hosts, methods and paths seen: review, then widen paths with * or ** where intended."]
    if client:
        head.append(f"# Add `clients: [{client}]` to each destination once this joins the rules that define it.")
    body = yaml.safe_dump({"version": 1, "destinations": destinations}, sort_keys=False, default_flow_style=False,
                          width=1000)
    return "\n".join(head) + "\n" + body, used
