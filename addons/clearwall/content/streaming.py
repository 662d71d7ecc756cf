"""Pure pieces of response streaming: event and line splitting, and the guards that decide,
chunk by chunk, what a streamed response may forward (no mitmproxy; the adapter is
`clearwall.mitm.streams`).
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from clearwall.content.inspect import Inspection, redact_spans
from clearwall.content.scanner import Scanner
from clearwall.policy.decision import Refusal

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
        # Event by event, whatever the chunking: filters see one event's text, as documented
        # (a scan of the chunk's events joined would read anchors differently).
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
