"""The destination decision: who may reach which host, port, method, path and MCP tool.

Evaluation order (the same for CONNECT and for each request inside a tunnel):
  1. The host is normalised; a name no rule could match is refused (destination_denied).
  2. `deny` entries, in file order: the first match refuses (destination_denied, that entry).
  3. Destinations whose hosts and port match are the candidates. None: default deny
     (destination_denied, rule `default`). Candidates exist but none lists this client:
     destination_denied naming the first such destination.
  4. CONNECT stops here: allowed when some candidate allows the client.
  5. Requests: the path is normalised (ambiguous paths are refused, request_denied); the first
     candidate allowing method, path, content type and MCP tool decides. None: request_denied
     naming the closest candidate (the first one for this client) and what it did not allow.
A refusal by a rule in report mode (its own `mode`, else `settings.mode`) is recorded as
would_block and the evaluation goes on as if allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from clearwall.policy.decision import DEFAULT_RULE, Decision, Refusal, Step
from clearwall.policy.hosts import normalize_host
from clearwall.policy.paths import PathRefused, normalize_path
from clearwall.policy.ruleset import CompiledDestination, RuleSet


@dataclass(frozen=True)
class Target:
    """What a client asked for. `path` is None for CONNECT."""

    host: str
    port: int
    scheme: str = "https"
    client: str | None = None
    method: str = "CONNECT"
    path: str | None = None
    content_type: str | None = None
    has_body: bool = False
    mcp_tools: tuple[str, ...] = ()


class _Evaluation:
    """One decision in progress: the trace (only when explaining), and refusals waived by
    report mode. The proxy decides every request and never reads the trace: building one Step
    per destination per request was most of the decision's cost."""

    def __init__(self, rules: RuleSet, t: Target, explain: bool) -> None:
        self.rules, self.t = rules, t
        self.trace: list[Step] | None = [] if explain else None
        self.waived: list[Refusal] = []

    def step(self, rule: str, section: str, outcome: str, detail: str) -> None:
        if self.trace is not None:
            self.trace.append(Step(rule, section, outcome, detail))

    def refuse(self, kind: str, rule: str, message: str, mode: str, destination: str | None = None) -> Decision | None:
        """A refusal to return, or None when report mode waived it (evaluation goes on)."""
        if mode == "report":
            self.step(rule, "report", "would_block", message)
            self.waived.append(Refusal(kind, rule, message))
            return None
        self.step(rule, "decision", "refused", message)
        return Decision(Refusal(kind, rule, message), destination, tuple(self.waived), tuple(self.trace or ()))

    def allow(self, destination: str | None) -> Decision:
        return Decision(None, destination, tuple(self.waived), tuple(self.trace or ()))


def decide(rules: RuleSet, t: Target, *, explain: bool = False) -> Decision:
    """Decide a CONNECT (t.path is None) or a request. Pure; never raises for bad input.
    `explain` records every step in `Decision.trace` (for `clearwall rules explain`)."""
    ev = _Evaluation(rules, t, explain)
    try:
        host = normalize_host(t.host)
    except ValueError as e:
        return ev.refuse("destination_denied", DEFAULT_RULE, f"invalid destination host: {e}",
                         rules.settings.mode) or ev.allow(None)
    denied, matching = rules.host_rules(host, t.port, t.scheme)
    for entry in denied:
        refused = ev.refuse("destination_denied", entry.name, f"{host} is on the deny list ({entry.name})", entry.mode)
        if refused:
            return refused
    if ev.trace is not None:
        for d in rules.destinations:
            ev.step(d.name, "destination", "matched" if d in matching else "skipped",
                    "host and port match" if d in matching else "host or port differ")
    if not matching:
        return ev.refuse("destination_denied", DEFAULT_RULE, f"no destination allows {host}:{t.port}",
                         rules.settings.mode) or ev.allow(None)
    candidates = [d for d in matching if d.allows_client(t.client)]
    if not candidates:
        d0, who = matching[0], t.client or "an unidentified client"
        refused = ev.refuse("destination_denied", d0.name, f"destination {d0.name} does not allow {who}", d0.mode)
        if refused:
            return refused
        candidates = matching
    if t.path is None:
        return ev.allow(candidates[0].name)
    return _decide_request(ev, candidates)


def _decide_request(ev: _Evaluation, candidates: list[CompiledDestination]) -> Decision:
    t, first = ev.t, candidates[0]
    try:
        path = normalize_path(t.path or "/")
    except PathRefused as e:
        return ev.refuse("request_denied", first.name, f"path refused: {e}", first.mode, first.name) or ev.allow(first.name)
    why = ""
    for d in candidates:
        if d.spec.tls == "passthrough":
            reason = f"{d.name} is TLS passthrough: requests are not decrypted"
        elif not d.allows_method(t.method):
            reason = f"method {t.method} is not allowed by {d.name}"
        elif not d.allows_path(path):
            reason = f"path {path} is not allowed by {d.name}"
        elif t.has_body and not d.allows_content_type(t.content_type):
            reason = f"content type {t.content_type or '(none)'} is not allowed by {d.name}"
        elif bad := next((tool for tool in t.mcp_tools if not d.allows_tool(tool)), None):
            reason = f"MCP tool {bad} is not allowed by {d.name}"
        else:
            ev.step(d.name, "destination", "allowed", f"{t.method} {path}")
            return ev.allow(d.name)
        ev.step(d.name, "destination", "skipped", reason)
        why = why or reason
    return ev.refuse("request_denied", first.name, why, first.mode, first.name) or ev.allow(first.name)
