"""The body log adapter: one record per exchange and per refused CONNECT.

Two addons, because order matters: `LogGate` runs first and refuses new flows while the log
cannot be written (traffic never flows unrecorded); `BodyLog` runs last, after every filter has
rewritten what it rewrites, so the record shows what was actually forwarded and answered.
Records are built and written in the writer's thread: the hook only gathers references.
"""

from __future__ import annotations

import functools
import logging
import time

from mitmproxy import http

from clearwall.audit.errors import AuditError
from clearwall.audit.record import Exchange, build_record, connect_record
from clearwall.audit.writer import queued_bytes_of
from clearwall.content.decode import decode_content
from clearwall.content.errors import ContentError
from clearwall.mitm import respond
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy.decision import Refusal

log = logging.getLogger("clearwall")
LOG_RULE = "body-log"


def _action(st: FlowState, error: bool) -> tuple[str, str | None]:
    if st.refusal is not None:
        kind = st.refusal.kind
        if kind == "rate_limited":
            return "rate_limited", kind
        return ("error" if kind == "inspection_error" else "blocked"), kind
    if error:
        return "error", "upstream_error"
    if st.would_block:
        return "would_block", st.would_block[0].kind
    return ("redacted" if st.redacted else "allowed"), None


# Decoding for the log is bounded like decoding for the filters: a body that decodes past this
# is logged as sent (base64 of the encoded bytes) with a note, never expanded without limit.
_LOG_DECODE_MAX = 64 * 1024 * 1024


def _decoded(body: bytes | None, headers: list[tuple[str, str]], notes: dict, side: str) -> bytes | None:
    encoding = ", ".join(v for k, v in headers if k.lower() == "content-encoding")
    if not body or not encoding.strip() or encoding.strip().lower() == "identity":
        return body
    try:
        return decode_content(body, encoding, max_size=_LOG_DECODE_MAX)
    except (ContentError, ValueError) as e:
        notes[side] = f"body kept as sent ({encoding}): {e}"
        return body


def _build(ex: Exchange, streamed=None) -> dict:
    """Runs in the writer thread: decompression never happens on the event loop."""
    notes: dict[str, str] = {}
    ex.request_body = _decoded(ex.request_body, ex.request_headers, notes, "request")
    if streamed is None:
        ex.response_body = _decoded(ex.response_body, ex.response_headers, notes, "response")
    if notes:
        ex.extra.setdefault("clearwall", {})["decode_errors"] = notes
    record = build_record(ex)
    body = record.get("http", {}).get("response", {}).get("body")
    if streamed is not None and body is not None:
        # A streamed body kept its first max_body_bytes only: describe the whole stream.
        body.update(bytes=streamed.total, sha256=streamed.sha256,
                    truncated=body["truncated"] or streamed.total > len(streamed.kept))
    return record


def _rules(st: FlowState) -> list[str]:
    names: list[str] = []
    if st.refusal is not None:
        names.append(st.refusal.rule)
    names += [r.rule for r in st.would_block]
    names += [m["rule"] for m in st.matches]
    if st.decision is not None and st.decision.destination:
        names.append(st.decision.destination)
    return list(dict.fromkeys(names))


class LogGate:
    name = "clearwall-log-gate"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        w = self.runtime.writer
        if w is not None and not w.writable and flow.response is None:
            respond.refuse(flow, Refusal("inspection_error", LOG_RULE,
                                         "the body log cannot be written; traffic is refused until it can"))

    http_connect = requestheaders


class BodyLog:
    name = "clearwall-body-log"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def _submit(self, record, held_bytes: int | None = None) -> None:
        w = self.runtime.writer
        if w is None:
            return
        try:
            # Waits while the queue is full: the response is held back rather than a record lost.
            await w.submit_async(record, held_bytes=held_bytes)
        except AuditError as e:
            # The writer is closed (shutting down). Say so loudly; LogGate refuses new flows.
            log.error("body log record lost: %s", e)

    @guarded
    async def response(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:  # a WebSocket connection is recorded when it ends
            await self._record(flow, error=False)

    @guarded
    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        await self._record(flow, error=False)

    @guarded
    async def error(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None:
            await self._record(flow, error=True)

    @guarded
    async def http_connect_error(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st.logged:
            return
        st.logged = True
        action, reason = _action(st, error=False)
        rules = st.rules
        ident = st.identity
        await self._submit(connect_record(Exchange(
            timestamp=st.started, flow_id=flow.id, action=action, reason=reason or "refused", rules=_rules(st),
            ruleset=rules.version if rules else None,
            client_ip=flow.client_conn.peername[0], client_port=flow.client_conn.peername[1],
            client_user=ident.user if ident else None, client_label=ident.client if ident else None,
            dest_domain=flow.request.host, dest_port=flow.request.port,
        ), status=flow.response.status_code if flow.response else 403))

    async def _record(self, flow: http.HTTPFlow, *, error: bool) -> None:
        st = flow_state(flow)
        if st.logged or flow.request.method == "CONNECT":
            return
        st.logged = True
        rules = st.rules or self.runtime.rules
        settings = rules.settings if rules else None
        # A client may stop reading an event stream whenever it likes: what it received was
        # inspected and forwarded, so that is not an error of the exchange (the reason says so).
        client_left = (error and st.stream_log is not None and flow.error is not None
                       and flow.error.msg.startswith("Client disconnected"))
        action, reason = _action(st, error and not client_left)
        req, resp = flow.request, flow.response
        ident = st.identity
        ex = Exchange(
            timestamp=req.timestamp_start or st.started,
            flow_id=flow.id,
            action=action,
            reason=reason if not error or st.refusal else (flow.error.msg if flow.error else reason),
            duration=(resp.timestamp_end or time.time()) - req.timestamp_start if resp and req.timestamp_start else None,
            rules=_rules(st),
            ruleset=rules.version if rules else None,
            client_ip=flow.client_conn.peername[0],
            client_port=flow.client_conn.peername[1],
            client_user=ident.user if ident else None,
            client_label=ident.client if ident else None,
            dest_domain=req.host,
            dest_ip=st.resolved_ip,
            dest_port=req.port,
            url=req.url,
            http_version=req.http_version,
            method=req.method,
            request_headers=_header_list(req.headers),
            request_body=req.raw_content,
            status=resp.status_code if resp else None,
            response_headers=_header_list(resp.headers) if resp else [],
            response_body=(bytes(st.stream_log.kept) if st.stream_log is not None
                           else resp.raw_content if resp and not resp.stream else None),
            sni=flow.client_conn.sni,
            mcp_method=st.mcp.get("method"),
            mcp_tool=st.mcp.get("tool"),
            mcp_id=st.mcp.get("id"),
            matches=list(st.matches),
            messages=list(st.ws_messages),
            max_body_bytes=settings.log.max_body_bytes if settings else 1024 * 1024,
            redact=frozenset(settings.log.redact_headers) if settings else frozenset(),
            secrets=tuple(st.secrets),
        )
        mcp_extra = {k: v for k, v in (("session_id", st.mcp.get("session")),
                                       ("tools_removed", st.mcp.get("tools_removed"))) if v}
        if mcp_extra:  # which MCP session, and which tools a tools/list result no longer shows
            ex.extra["mcp"] = mcp_extra
        if st.would_block:
            ex.extra["clearwall"] = {"would_block": [
                {"kind": r.kind, "rule": r.rule, "message": r.message} for r in st.would_block]}
        held = queued_bytes_of(ex)  # bodies and WebSocket messages the queued record keeps alive
        build = functools.partial(_build, ex, st.stream_log)
        build.flow_id = ex.flow_id  # a record that cannot be built still leaves one under this id
        await self._submit(build, held_bytes=held)


def _header_list(headers: http.Headers) -> list[tuple[str, str]]:
    """(name, value) pairs decoded as mitmproxy decodes them, without its per-item overhead."""
    return [(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for k, v in headers.fields]
