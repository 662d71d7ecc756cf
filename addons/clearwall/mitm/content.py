"""Content filters and size caps on requests and responses (SPEC §3-§4).

Order inside one flow: caps on Content-Length before a body is read (requestheaders /
responseheaders), then URL, headers and body scanned once the body is buffered (request /
response). Large bodies are scanned in a worker thread so one big upload never stalls every
other client; each scan has the rule set's time limit and a timeout refuses (inspection_error).

Credential headers (Authorization, API-key headers, cookies) are the channel credentials are
meant to travel in, to a destination the allowlist already approved; they are not scanned as
`request.headers` so that ordinary authenticated API calls are not refused as leaks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict

from mitmproxy import http

from clearwall.content.inspect import INSPECTION_ERROR, TOO_LARGE, Inspection, inspect_body, inspect_text
from clearwall.content.scanner import Scanner
from clearwall.content.spec import FilterSpec
from clearwall.mitm import respond
from clearwall.mitm.respond import refuse_at_headers
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy.decision import Refusal
from clearwall.policy.ruleset import RuleSet

log = logging.getLogger("clearwall")
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
                                "x-auth-token", "cookie", "set-cookie"})
RESPONSE_SKIP = frozenset({"set-cookie"})
THREAD_THRESHOLD = 16 * 1024  # bodies above this are scanned off the event loop
MAX_RATIO = 100.0
SIZE_RULE = "size-limit"


def scanner_for(rules: RuleSet) -> Scanner:
    specs = [FilterSpec(f.name, f.pattern, frozenset(f.where), f.action, f.mode or rules.settings.mode, f.validate_)
             for f in rules.filters]
    return Scanner(specs, timeout=rules.settings.scan_timeout)


def caps(rules: RuleSet, st: FlowState) -> tuple[int | None, int | None]:
    dest = rules.destination(st.decision.destination) if st.decision and st.decision.destination else None
    if dest is not None:
        return dest.request_cap, dest.response_cap
    return rules.settings.limits.request_body, rules.settings.limits.response_body


def _over_cap(st: FlowState, side: str, size: int | str | None, cap: int | None) -> Refusal | None:
    """The size refusal for a body of `size` bytes (a Content-Length string or a count), if over."""
    if isinstance(size, str):
        size = int(size) if size.isdigit() else None
    if cap is None or size is None or size <= cap:
        return None
    rule = st.decision.destination if st.decision and st.decision.destination else SIZE_RULE
    return Refusal(f"{side}_too_large", rule, f"{side} body of {size} bytes is over the {cap}-byte cap")


def _headers_text(headers: http.Headers, skip: frozenset[str]) -> str:
    # From the raw fields, decoded once the way mitmproxy decodes each header (half the cost).
    skip_raw = _raw_names(skip)
    return b"\n".join(k + b": " + v for k, v in headers.fields if k.lower() not in skip_raw).decode(
        "utf-8", "surrogateescape")


@functools.lru_cache(maxsize=8)
def _raw_names(names: frozenset[str]) -> frozenset[bytes]:
    return frozenset(n.lower().encode("utf-8", "surrogateescape") for n in names)


_SCANNERS: OrderedDict[str, Scanner] = OrderedDict()  # by rules version; shared by every addon


def scanner(rules: RuleSet) -> Scanner:
    """The compiled scanner of a rule set, built once and shared (content, MCP, streams, WebSocket)."""
    s = _SCANNERS.get(rules.fingerprint)
    if s is None:
        s = remember(rules, scanner_for(rules))
    return s


def remember(rules: RuleSet, s: Scanner) -> Scanner:
    """Keep a scanner built elsewhere (a reload compiles it in a thread: ~0.4 s of Hyperscan
    compilation would otherwise stall every client on the first flow under the new rules)."""
    if _SCANNERS.get(rules.fingerprint) is None:
        _SCANNERS[rules.fingerprint] = s
        log.info("content filters: %s", s.engine_description)
        while len(_SCANNERS) > 2:  # in-flight flows may still hold the previous rules
            _SCANNERS.popitem(last=False)
    return _SCANNERS[rules.fingerprint]


class ContentFilters:
    name = "clearwall-content"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @staticmethod
    def _scanner(rules: RuleSet) -> Scanner:
        return scanner(rules)

    def running(self) -> None:
        if self.runtime.rules is not None:
            self._scanner(self.runtime.rules)  # compile at start-up, and announce the engine

    # ----- requests ---------------------------------------------------------------------

    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        refusal = _over_cap(st, "request", flow.request.headers.get("content-length"), caps(st.rules, st)[0])
        if refusal is not None:
            respond.refuse(flow, refusal)

    @guarded
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        rules = st.rules
        cap = caps(rules, st)[0]
        body = flow.request.raw_content or b""
        if (refusal := _over_cap(st, "request", len(body), cap)) is not None:
            return respond.refuse(flow, refusal)
        if not rules.filters:
            return
        scanner = self._scanner(rules)
        req = flow.request
        # `url`, not `pretty_url` (6x the cost): Access refused any Host header naming another host.
        url = inspect_text(scanner, "request.url", req.url)
        if apply_inspection(flow, st, url, "request.url", "content_blocked"):
            return
        heads = inspect_text(scanner, "request.headers", _headers_text(req.headers, CREDENTIAL_HEADERS))
        if apply_inspection(flow, st, heads, "request.headers", "content_blocked"):
            return
        body_result = await self._inspect_body(scanner, "request.body", body, req.headers, cap)
        if apply_inspection(flow, st, body_result, "request.body", "content_blocked", too_large="request_too_large"):
            return
        if url.redacted is not None:
            req.url = url.redacted
        if heads.redacted is not None:
            _replace_headers(req.headers, CREDENTIAL_HEADERS, heads.redacted)
        if body_result.redacted is not None:
            replace_body(req, body_result.redacted)

    # ----- responses --------------------------------------------------------------------

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st.refusal is not None or st.rules is None:
            return
        refusal = _over_cap(st, "response", flow.response.headers.get("content-length"), caps(st.rules, st)[1])
        if refusal is not None:
            return refuse_at_headers(flow, refusal)
        if not st.rules.filters:
            return
        # Here, not in `response`: a streamed response (SSE, large bodies) sends its headers
        # right after this hook.
        resp = flow.response
        heads = inspect_text(self._scanner(st.rules), "response.headers", _headers_text(resp.headers, RESPONSE_SKIP))
        if apply_inspection(flow, st, heads, "response.headers", "response_blocked", at_headers=True):
            return
        if heads.redacted is not None:
            _replace_headers(resp.headers, RESPONSE_SKIP, heads.redacted)

    @guarded
    async def response(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st.refusal is not None or flow.response.stream:
            return
        if st.rules is None:
            # No policy addon decided this flow (it should be impossible): never pass it unchecked.
            return respond.inspection_error(flow, "response without a decided request")
        rules = st.rules
        cap = caps(rules, st)[1]
        resp = flow.response
        body = resp.raw_content or b""
        if (refusal := _over_cap(st, "response", len(body), cap)) is not None:
            return respond.refuse(flow, refusal)
        if not rules.filters:
            return
        result = await self._inspect_body(self._scanner(rules), "response.body", body, resp.headers, cap)
        if apply_inspection(flow, st, result, "response.body", "response_blocked", too_large="response_too_large"):
            return
        if result.redacted is not None:
            replace_body(resp, result.redacted)

    # ----- shared -----------------------------------------------------------------------

    async def _inspect_body(self, scanner: Scanner, target: str, body: bytes, headers: http.Headers,
                            cap: int | None) -> Inspection:
        if not body:
            return Inspection()
        kwargs = dict(content_type=headers.get("content-type"), content_encoding=headers.get("content-encoding"),
                      max_size=cap if cap is not None else 1 << 40, max_ratio=MAX_RATIO)
        if len(body) < THREAD_THRESHOLD and "content-encoding" not in headers:
            return inspect_body(scanner, target, body, **kwargs)
        return await asyncio.to_thread(inspect_body, scanner, target, body, **kwargs)

def note_matches(st: FlowState, result: Inspection, where: str, kind: str, *, once: bool = False) -> None:
    """Record each matched filter and target once on the flow (the log names them, never the
    matched text), and the report-mode filters that would have refused. `once`: one would-block
    per filter, for streams and WebSocket connections that are scanned many times."""
    seen = {(m["rule"], m["where"]) for m in st.matches}
    for m in result.matches:
        if (m.filter, m.target) not in seen:
            seen.add((m.filter, m.target))
            st.matches.append({"rule": m.filter, "where": m.target, "action": m.action,
                               **({"mode": "report"} if m.mode == "report" else {})})
    for name in result.would_block:
        if once and any(r.rule == name and r.kind == kind for r in st.would_block):
            continue
        st.would_block.append(Refusal(kind, name, f"filter {name} matched {where}"))


def apply_inspection(flow: http.HTTPFlow, st: FlowState, result: Inspection, where: str, kind: str,
                     too_large: str = "request_too_large", *, at_headers: bool = False) -> bool:
    """Record matches and would-blocks on the flow; refuse it when the result says so (True).
    `at_headers`: refusing at response headers, before the body was read."""
    note_matches(st, result, where, kind)
    refuse = refuse_at_headers if at_headers else respond.refuse
    if result.error == TOO_LARGE:
        refuse(flow, Refusal(too_large, SIZE_RULE, f"{where} decodes past its size or 100:1 ratio cap"))
        return True
    if result.error is not None:
        refuse(flow, Refusal(INSPECTION_ERROR, "content-inspection",
                             f"{where} could not be inspected (undecodable, or the scan timed out)"))
        return True
    if result.blocked_by is not None:
        refuse(flow, Refusal(kind, result.blocked_by, f"filter {result.blocked_by} matched {where}"))
        return True
    if result.redacted is not None:
        st.redacted = True
    return False


def _replace_headers(headers: http.Headers, skip: frozenset[str], redacted: str) -> None:
    """Put redacted values back; `redacted` holds one `name: value` line per scanned header."""
    lines = iter(redacted.split("\n"))
    fields: list[tuple[str, str]] = []
    for name, value in headers.items(multi=True):
        if name.lower() not in skip:
            line = next(lines)
            value = line.split(": ", 1)[1] if ": " in line else ""
        fields.append((name, value))
    if next(lines, None) is not None:
        raise ValueError("header redaction changed the number of headers")
    headers.clear()
    for name, value in fields:
        headers.add(name, value)


def replace_body(message: http.Message, data: bytes) -> None:
    """Forward the redacted, identity-encoded body with a right Content-Length."""
    message.headers.pop("content-encoding", None)
    message.raw_content = data
    if "transfer-encoding" not in message.headers:
        message.headers["content-length"] = str(len(data))
