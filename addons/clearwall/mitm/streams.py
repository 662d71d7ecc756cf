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
import codecs
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import ctx, http

from clearwall.content.decode import media_type
from clearwall.content.inspect import Inspection, inspect_text, redact_spans
from clearwall.content.scanner import Scanner
from clearwall.mitm.content import caps, refuse_at_headers, scanner
from clearwall.mitm.guard import guarded
from clearwall.mitm.mcp import mcp_policy
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy import mcp as rpc
from clearwall.policy import refusal as shape
from clearwall.policy.decision import Refusal

log = logging.getLogger("clearwall")
STREAM_THRESHOLD = 8 * 1024 * 1024
MAX_EVENT = 4 * 1024 * 1024  # one event (an MCP tool result can be one large event)
SIZE_RULE = "size-limit"
# Line-delimited JSON record streams, streamed record by record like SSE when they have no length.
JSON_LINES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                        "application/x-jsonlines", "application/json-seq"})


class StreamLog:
    """What a streamed response forwarded, for the body log: a bounded prefix, length, sha256."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.kept = bytearray()
        self.total = 0
        self._sha = hashlib.sha256()

    def add(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        self._sha.update(data)
        room = len(data) if self.max_bytes is None else self.max_bytes - len(self.kept)
        if room > 0:
            self.kept += data[:room]

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


@dataclass(frozen=True)
class Verdict:
    text: str | None = None  # the rewritten event, when a filter redacted it
    refusal: Refusal | None = None


_EOL = re.compile(rb"\r\n|\r|\n")


def split_events(buf: bytes, final: bool = False) -> tuple[list[bytes], bytes]:
    """Whole SSE events (each with its terminating blank line) and the incomplete rest.

    Lines end with CRLF, LF or CR; an empty line ends an event. A CR at the very end of the
    buffer may be the first half of a CRLF, so it waits for more data (unless `final`).
    """
    events: list[bytes] = []
    start = line_start = 0
    n = len(buf)
    for m in _EOL.finditer(buf):
        pos, end = m.span()
        if end == n and end - pos == 1 and buf[pos] == 13 and not final:
            break  # CR or CRLF? decide when more data arrives
        if pos == line_start:  # an empty line: the event is complete
            events.append(bytes(buf[start:end]))
            start = end
        line_start = end
    rest = bytes(buf[start:])
    if final and rest:
        events.append(rest)
        rest = b""
    return events, rest


def split_lines(buf: bytes, final: bool = False) -> tuple[list[bytes], bytes]:
    """Whole lines (NDJSON / JSON Lines records, each with its LF) and the incomplete rest."""
    cut = buf.rfind(b"\n") + 1
    lines = buf[:cut].splitlines(keepends=True) if cut else []
    rest = buf[cut:]
    if final and rest:
        lines.append(rest)
        rest = b""
    return lines, rest


def _data_of(event: str) -> tuple[list[str], str | None, str]:
    """(other field lines, joined data or None, event type) of one event's text."""
    others, data, etype = [], [], ""
    for line in event.splitlines():
        if line.startswith("data:"):
            data.append(line[5:][1:] if line[5:].startswith(" ") else line[5:])
        elif line:
            if line.startswith("event:"):
                etype = line[6:].strip()
            others.append(line)
    return others, ("\n".join(data) if data else None), etype


class SseGuard:
    """The stream callable of one SSE response: reassemble, transform, check, forward or refuse."""

    def __init__(self, check: Callable[[str], Verdict], *, cap: int | None, max_event: int,
                 on_refuse: Callable[[Refusal], bytes], decoder=None,
                 transform: Callable[[str], str] | None = None, max_ratio: float = 100.0,
                 split: Callable[[bytes, bool], tuple[list[bytes], bytes]] | None = None) -> None:
        self._split = split or split_events
        self._check, self._cap, self._max_event = check, cap, max_event
        self._on_refuse, self._decoder, self._transform = on_refuse, decoder, transform
        self._max_ratio = max_ratio
        self._buf = b""
        self._raw = self._decoded = 0
        self.done = False

    def __call__(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        final = chunk == b""
        data = self._decode(chunk, final)
        if isinstance(data, Refusal):
            return self.fail(data)
        if self._cap is not None and self._decoded > self._cap:
            return self.fail(Refusal("response_too_large", SIZE_RULE,
                                     f"event stream went over the {self._cap}-byte response cap"))
        events, self._buf = self._split(self._buf + data, final)
        if len(events) > 1 and self._transform is None:
            # Clean traffic is the common case: one scan for every event of the chunk. Any
            # finding sends the chunk through the per-event path, which alone decides.
            joined = b"".join(events)
            verdict = self._check(joined.decode("utf-8", "surrogateescape"))
            if verdict.refusal is None and verdict.text is None:
                events = [joined]
        out = bytearray()
        for raw in events:
            verdict = self._event(raw)
            if isinstance(verdict, Refusal):
                return bytes(out) + self.fail(verdict)
            out += verdict
        if len(self._buf) > self._max_event:
            return bytes(out) + self.fail(Refusal("response_too_large", SIZE_RULE,
                                                  f"an event went over the {self._max_event}-byte event cap"))
        return bytes(out)

    def fail(self, refusal: Refusal) -> bytes:
        if self.done:
            return b""
        self.done = True
        return self._on_refuse(refusal)

    def _decode(self, chunk: bytes, final: bool) -> bytes | Refusal:
        self._raw += len(chunk)
        if self._decoder is None:
            self._decoded += len(chunk)
            return chunk
        limit = (self._cap if self._cap is not None else 1 << 40) - self._decoded + 1
        data = self._decoder.decompress(chunk, limit) if chunk else self._decoder.flush()
        self._decoded += len(data)
        if self._decoder.unconsumed_tail or self._decoded > self._max_ratio * self._raw + 65536:
            return Refusal("response_too_large", SIZE_RULE, "event stream decodes past its size or 100:1 ratio cap")
        return data

    def _event(self, raw: bytes) -> bytes | Refusal:
        text = raw.decode("utf-8", "surrogateescape")
        changed = False
        if self._transform is not None:
            others, data, etype = _data_of(text)
            if data is not None and etype in ("", "message"):
                try:
                    new = self._transform(data)
                except Exception:  # noqa: BLE001 - an answer we cannot filter is not forwarded
                    return Refusal("inspection_error", "content-inspection", "an MCP event could not be read to filter it")
                if new != data:
                    text = "\n".join(others + [f"data: {new}"]) + "\n\n"
                    changed = True
        verdict = self._check(text)
        if verdict.refusal is not None:
            return verdict.refusal
        if verdict.text is not None:
            return verdict.text.encode("utf-8", "surrogateescape")
        return text.encode("utf-8", "surrogateescape") if changed else raw


class ChunkGuard:
    """The stream callable of a large body: overlapping chunk scan, forwarding settled text only.

    Text is forwarded up to `position - 2 * window`: any match not yet reported ends after
    `position - window` and is at most `window` long, so nothing before that point can still
    change. A reported redaction straddling the point holds the point back to its start.
    """

    def __init__(self, sc: Scanner | None, record: Callable[[Inspection, str], None], *, cap: int | None,
                 on_refuse: Callable[[Refusal], bytes], on_redact: Callable[[], None] = lambda: None,
                 target: str = "response.body") -> None:
        self._scan = sc.stream(target) if sc is not None else None
        self._record, self._cap, self._target = record, cap, target
        self._on_refuse, self._on_redact = on_refuse, on_redact
        self._text = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._pending = ""  # decoded text not forwarded yet
        self._at = 0  # absolute offset of _pending[0]
        self._redacts: list = []
        self._total = 0
        self.done = False

    def __call__(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        final = chunk == b""
        self._total += len(chunk)
        if self._cap is not None and self._total > self._cap:
            return self.fail(Refusal("response_too_large", SIZE_RULE,
                                     f"response body went over the {self._cap}-byte cap while streaming"))
        if self._scan is None:
            return chunk
        text = self._text.decode(chunk, final)
        found = self._scan.feed(text) if text else []
        if final:
            found += self._scan.finish()
        if found:
            result = Inspection(matches=found, would_block=sorted(
                {m.filter for m in found if m.mode == "report" and m.action != "alert"}))
            self._record(result, self._target)
            block = next((m for m in found if m.mode == "enforce" and m.action == "block"), None)
            if block is not None:
                return self.fail(Refusal("response_blocked", block.filter, f"filter {block.filter} matched {self._target}"))
            self._redacts += [m for m in found if m.mode == "enforce" and m.action == "redact"]
        self._pending += text
        return self._release(final).encode("utf-8", "surrogateescape")

    def _release(self, final: bool) -> str:
        end = self._at + len(self._pending)
        safe = end if final else max(self._at, end - 2 * self._scan.window)
        for m in self._redacts:
            if m.start < safe < m.end:
                safe = m.start
        cut = safe - self._at
        out, self._pending = self._pending[:cut], self._pending[cut:]
        now = [m for m in self._redacts if m.end <= safe]
        self._redacts = [m for m in self._redacts if m.end > safe]
        if now:
            self._on_redact()
            shifted = [type(m)(m.filter, m.action, m.target, m.start - self._at, m.end - self._at, m.mode) for m in now]
            out = redact_spans(out, shifted)
        self._at = safe
        return out

    def fail(self, refusal: Refusal) -> bytes:
        if self.done:
            return b""
        self.done = True
        return self._on_refuse(refusal)


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
    seen = {(m["rule"], m["where"]) for m in st.matches}
    for m in result.matches:
        if (m.filter, m.target) not in seen:
            seen.add((m.filter, m.target))
            st.matches.append({"rule": m.filter, "where": m.target, "action": m.action,
                               **({"mode": "report"} if m.mode == "report" else {})})
    for name in result.would_block:
        if not any(r.rule == name and r.kind == "response_blocked" for r in st.would_block):
            # once per filter: a long stream must not grow this list
            st.would_block.append(Refusal("response_blocked", name, f"filter {name} matched {where}"))


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
            return self._stream_sse(flow, st)
        if kind in JSON_LINES and "content-length" not in resp.headers:
            return self._stream_sse(flow, st, lines=True)  # long-lived record streams (LLM APIs)
        if mcp_policy(st) is not None and st.mcp.get("method") == rpc.TOOLS_LIST:
            return  # a tools/list result is filtered whole (Mcp.response), never streamed past it
        length = resp.headers.get("content-length", "")
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        if length.isdigit() and int(length) > self.stream_threshold and encoding in ("", "identity"):
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

