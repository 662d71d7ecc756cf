"""Streamed responses (SPEC §3-§5): Server-Sent Events and large bodies, scanned as they pass.

mitmproxy buffers every response unless `flow.response.stream` is set in `responseheaders`;
a long-lived event stream would never reach the client. This addon decides, per response:
- `text/event-stream`: streamed event by event. Network chunks are reassembled into whole
  events (a blank line ends one); each event is scanned by `sse` and `response.body` filters
  before it is forwarded, so nothing reaches the client unscanned and a secret split across
  chunks is seen whole. `redact` rewrites the event; `block` (or the response cap, or an event
  over `max_event`) sends one final event saying why — a JSON-RPC error for MCP requests — and
  closes the client connection (flow.kill() has no effect mid-stream).
- JSON Lines record streams (NDJSON, no Content-Length): the same, record by record.
- identity-encoded bodies with a Content-Length over `stream_threshold` (and within the cap):
  streamed through the overlapping chunk scanner (content/stream.py), forwarding only text
  whose matches are settled, so a pattern spanning two chunks is still found and redacted.
  A block cuts the connection: the headers are gone, so a truncated body is the refusal.
- everything else stays buffered and is handled by ContentFilters (full decoding, evasions).
The body log gets what the client received: its first `max_body_bytes` and the whole-stream
length and sha256 (`FlowState.stream_log`). Every callable fails closed: an exception inside it
would otherwise leave the client hanging with headers and no body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import zlib
from collections.abc import Callable

from mitmproxy import ctx, http

from clearwall.content.decode import media_type
from clearwall.content.inspect import ASCII_COMPATIBLE, Inspection, body_charset, inspect_text
from clearwall.content.streaming import (  # noqa: F401 (re-exported for the adapter's users)
    JSON_LINES, MAX_EVENT, STREAM_THRESHOLD, ChunkGuard, SseGuard, StreamLog, Verdict,
    split_events, split_lines,
)
from clearwall.mitm.content import caps, note_matches, scanner
from clearwall.mitm.respond import refuse_at_headers
from clearwall.mitm.guard import guarded
from clearwall.mitm.mcp import mcp_policy
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy import mcp as rpc
from clearwall.policy import refusal as shape
from clearwall.policy.decision import Refusal

log = logging.getLogger("clearwall")
def close_client(flow: http.HTTPFlow) -> bool:
    """Close the client connection once what is already queued has been written.

    Private mitmproxy API (the proxyserver's connection table), kept in this one helper: the
    transport's close() flushes the buffer (the final event) and then closes the socket.
    """
    try:
        handler = ctx.master.addons.get("proxyserver").connections[flow.client_conn.id]
        writer = handler.transports[handler.client].writer
    except Exception:  # noqa: BLE001 - connection already gone
        log.warning("could not find the client connection of flow %s to close it", flow.id)
        return False
    asyncio.get_running_loop().call_soon(writer.close)
    return True


def _decoder(encoding: str | None):
    """An incremental decoder for gzip/deflate, None for identity; ValueError for others."""
    enc = (encoding or "").strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=31)
    if enc == "deflate":
        return zlib.decompressobj(wbits=47)
    raise ValueError(f"streamed responses with Content-Encoding {encoding!r} cannot be inspected")


def _check(st: FlowState, sc, targets: tuple[str, ...], text: str) -> Verdict:
    """Scan one event for each target in turn; redactions of one are seen by the next."""
    redacted = None
    for target in targets:
        result = inspect_text(sc, target, redacted if redacted is not None else text)
        _record(st, result, target)
        if result.error is not None:
            return Verdict(refusal=Refusal("inspection_error", "content-inspection",
                                           f"{target} could not be inspected (the scan timed out)"))
        if result.blocked_by is not None:
            return Verdict(refusal=Refusal("response_blocked", result.blocked_by,
                                           f"filter {result.blocked_by} matched {target}"))
        if isinstance(result.redacted, str):
            redacted = result.redacted
            st.redacted = True
    return Verdict(text=redacted)


def _record(st: FlowState, result: Inspection, where: str) -> None:
    note_matches(st, result, where, "response_blocked", once=True)  # a long stream must not grow the list


def _final_line(flow: http.HTTPFlow, refusal: Refusal) -> bytes:
    """The last record a refused JSON Lines stream sends: the SPEC §4 refusal object."""
    return json.dumps(shape.body(refusal, flow.id), ensure_ascii=False).encode() + b"\n"


def _final_event(flow: http.HTTPFlow, st: FlowState, refusal: Refusal) -> bytes:
    """The last event a refused stream sends: a JSON-RPC error for MCP requests."""
    doc = shape.body(refusal, flow.id)
    if st.mcp_request_id is not None:
        msg = {"jsonrpc": "2.0", "id": st.mcp_request_id,
               "error": {"code": shape.JSONRPC_REFUSED, "message": refusal.message, "data": doc}}
        return b"event: message\ndata: " + json.dumps(msg, ensure_ascii=False).encode() + b"\n\n"
    return b"event: clearwall-error\ndata: " + json.dumps(doc, ensure_ascii=False).encode() + b"\n\n"


def _tools_list_transform(st: FlowState) -> Callable[[str], str] | None:
    """For tools/list answered over SSE: filter each JSON-RPC result to the allowed tools."""
    dest = mcp_policy(st)
    if dest is None or st.mcp.get("method") != rpc.TOOLS_LIST:
        return None

    def transform(data: str) -> str:
        doc, removed = rpc.filter_tools_list(rpc.loads_strict(data), dest.allows_tool)
        if removed:
            st.mcp.setdefault("tools_removed", []).extend(removed)
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))

    return transform


class Streams:
    name = "clearwall-streams"

    def __init__(self, runtime: Runtime, *, stream_threshold: int = STREAM_THRESHOLD,
                 max_event: int = MAX_EVENT) -> None:
        if stream_threshold < 1 or max_event < 1:
            raise ValueError("stream_threshold and max_event must be positive")
        self.runtime = runtime
        self.stream_threshold, self.max_event = stream_threshold, max_event

    @guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        resp = flow.response
        if st.refusal is not None or st.rules is None or resp is None or resp.stream:
            return
        kind = media_type(resp.headers.get("content-type"))[0].lower()
        if kind == "text/event-stream":
            return self._stream_sse(flow, st)  # a tools/list result in events is filtered per event
        if mcp_policy(st) is not None and st.mcp.get("method") == rpc.TOOLS_LIST:
            return  # otherwise filtered whole (Mcp.response), never streamed past it
        if kind in JSON_LINES and "content-length" not in resp.headers:
            return self._stream_sse(flow, st, lines=True)  # long-lived record streams (LLM APIs)
        length = resp.headers.get("content-length", "")
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        # The streamed scan reads UTF-8 (or any ASCII-keeping charset); a body in another
        # charset (UTF-16, EBCDIC) stays buffered, where inspect_body decodes it as declared.
        if (length.isdigit() and int(length) > self.stream_threshold and encoding in ("", "identity")
                and body_charset(resp.headers.get("content-type")) in ASCII_COMPATIBLE):
            self._stream_large(flow, st)

    def _stream_sse(self, flow: http.HTTPFlow, st: FlowState, lines: bool = False) -> None:
        resp = flow.response
        try:
            decoder = _decoder(resp.headers.get("content-encoding"))
        except ValueError as e:
            return refuse_at_headers(flow, Refusal("inspection_error", "content-inspection", str(e)))
        if decoder is not None:
            resp.headers.pop("content-encoding")  # forwarded decoded: that is what was scanned
        if resp.headers.pop("content-length", None) is not None or decoder is not None:
            if "transfer-encoding" not in resp.headers and flow.request.http_version == "HTTP/1.1":
                resp.headers["transfer-encoding"] = "chunked"  # the length changes with redaction
        rules = st.rules
        targets = tuple(t for t in ("sse", "response.body") if any(t in f.where for f in rules.filters))
        sc = scanner(rules) if targets else None
        check = (lambda text: _check(st, sc, targets, text)) if targets else (lambda text: Verdict())
        guard = SseGuard(check, cap=caps(rules, st)[1], max_event=self.max_event, decoder=decoder,
                         transform=None if lines else _tools_list_transform(st),
                         split=split_lines if lines else split_events,
                         on_refuse=lambda refusal: self._refuse_stream(flow, st, refusal, lines))
        self._start(flow, st, guard)

    def _start(self, flow: http.HTTPFlow, st: FlowState, guard) -> None:
        rules = st.rules
        st.stream_log = StreamLog(rules.settings.log.max_body_bytes)

        def stream(chunk: bytes) -> list[bytes]:
            try:
                out = guard(chunk)
            except Exception:  # noqa: BLE001 - an exception here would hang the client
                out = guard.fail(Refusal("inspection_error", "content-inspection",
                                         "internal error while inspecting the stream"))
                try:
                    log.exception("inspection error while streaming flow %s; closed it", flow.id)
                except Exception:  # noqa: BLE001 - the refusal above must stand whatever logging does
                    pass
            st.stream_log.add(out)
            # Never hand mitmproxy b"": on a chunked response it is sent as a zero-length chunk,
            # which is the end-of-body marker, and the client would stop reading there.
            return [out] if out else []

        flow.response.stream = stream

    def _stream_large(self, flow: http.HTTPFlow, st: FlowState) -> None:
        rules = st.rules
        applies = [f for f in rules.filters if "response.body" in f.where]
        sc = scanner(rules) if applies else None
        if any(f.action == "redact" for f in applies):
            # A redaction changes the length: forward chunked, as the scanner settles the text.
            flow.response.headers.pop("content-length", None)
            if flow.request.http_version == "HTTP/1.1":
                flow.response.headers["transfer-encoding"] = "chunked"
        guard = ChunkGuard(sc, lambda r, t: _record(st, r, t), cap=caps(rules, st)[1],
                           on_refuse=self._on_cut(flow, st), on_redact=lambda: setattr(st, "redacted", True))
        self._start(flow, st, guard)

    @staticmethod
    def _refuse_stream(flow: http.HTTPFlow, st: FlowState, refusal: Refusal, lines: bool = False) -> bytes:
        """Record the refusal, queue the final event (or record), and close the client after it."""
        st.refusal = refusal
        close_client(flow)
        return _final_line(flow, refusal) if lines else _final_event(flow, st, refusal)

    @staticmethod
    def _on_cut(flow: http.HTTPFlow, st: FlowState) -> Callable[[Refusal], bytes]:
        def cut(refusal: Refusal) -> bytes:
            st.refusal = refusal
            close_client(flow)
            return b""

        return cut

