"""Streamed responses without a proxy: SSE reassembly and per-event checks, the large-body chunk guard."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import pytest

from clearwall.content.inspect import inspect_text
from clearwall.content.scanner import Scanner
from clearwall.content.spec import FilterSpec
from clearwall.content.streaming import ChunkGuard, SseGuard, StreamLog, Verdict, split_events, split_lines
from clearwall.policy.decision import Refusal

AWS = "AKIAPYCDYBK377OXTZQ6"


@pytest.mark.parametrize("name, buf, final, events, rest", [
    ("one LF event", b"data: a\n\n", False, [b"data: a\n\n"], b""),
    ("CRLF lines", b"data: a\r\n\r\ndata: b\r\n", False, [b"data: a\r\n\r\n"], b"data: b\r\n"),
    ("a CRLF event ending the buffer", b"data: a\r\n\r\n", False, [b"data: a\r\n\r\n"], b""),
    ("CR lines", b"data: a\r\rdata: b\r\rx", False, [b"data: a\r\r", b"data: b\r\r"], b"x"),
    ("a final CR ends the stream", b"data: a\r\r", True, [b"data: a\r\r"], b""),
    ("a trailing CR waits for its LF", b"data: a\r\n\r", False, [], b"data: a\r\n\r"),
    ("two events and a partial one", b"data: 1\n\ndata: 2\n\ndata: 3", False, [b"data: 1\n\n", b"data: 2\n\n"], b"data: 3"),
    ("a multi-line event", b"event: x\ndata: 1\ndata: 2\n\n", False, [b"event: x\ndata: 1\ndata: 2\n\n"], b""),
    ("the end flushes the partial event", b"data: 3", True, [b"data: 3"], b""),
    ("nothing yet", b"data: par", False, [], b"data: par"),
])
def test_split_events(name, buf, final, events, rest):
    assert split_events(buf, final) == (events, rest)


def scanner(*specs) -> Scanner:
    return Scanner([FilterSpec(*s) for s in specs], timeout=1.0)


SC = scanner(("aws", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", frozenset({"sse", "response.body"}), "block", "enforce", None),
             ("email", r"[\w.+-]+@[\w-]+\.[\w.]+", frozenset({"sse", "response.body"}), "redact", "enforce", None))


def check(text: str) -> Verdict:
    r = inspect_text(SC, "sse", text)
    if r.blocked_by:
        return Verdict(refusal=Refusal("response_blocked", r.blocked_by, "matched"))
    return Verdict(text=r.redacted if isinstance(r.redacted, str) else None)


class Closed(list):
    def __call__(self, refusal):
        self.append(refusal)
        return b"event: clearwall-error\ndata: " + refusal.kind.encode() + b"\n\n"


def guard(**kw):
    closed = Closed()
    g = SseGuard(kw.pop("check", check), cap=kw.pop("cap", None), max_event=kw.pop("max_event", 4096),
                 on_refuse=closed, **kw)
    return g, closed


def test_events_are_forwarded_whole_as_soon_as_they_are_complete():
    g, closed = guard()
    assert g(b"data: one\n") == b""
    assert g(b"\ndata: tw") == b"data: one\n\n"
    assert g(b"o\n\n") == b"data: two\n\n"
    assert g(b"") == b"" and not closed


def test_a_secret_split_across_chunks_blocks_and_nothing_after_it_is_forwarded():
    g, closed = guard()
    out = g(b"data: ok\n\ndata: key " + AWS[:9].encode())
    assert out == b"data: ok\n\n"
    out = g(AWS[9:].encode() + b"\n\ndata: later\n\n")
    assert AWS.encode() not in out and out.startswith(b"event: clearwall-error")
    assert [r.kind for r in closed] == ["response_blocked"]
    assert g(b"data: more\n\n") == b"" and g(b"") == b""


def test_redaction_rewrites_the_event():
    g, _ = guard()
    assert g(b"data: mail bob@example.com now\n\n") == b"data: mail [REDACTED:email] now\n\n"


@pytest.mark.parametrize("name, cap, chunks, refused", [
    ("under the cap", 100, [b"data: 12345\n\n"] * 5, False),
    ("exactly at the cap", 65, [b"data: 12345\n\n"] * 5, False),
    ("one byte over the cap", 64, [b"data: 12345\n\n"] * 5, True),
])
def test_the_response_cap_counts_the_whole_stream(name, cap, chunks, refused):
    g, closed = guard(cap=cap)
    for c in chunks:
        g(c)
    assert bool(closed) == refused
    if refused:
        assert closed[0].kind == "response_too_large"


@pytest.mark.parametrize("name, size, refused", [("at the event cap", 64, False), ("over the event cap", 65, True)])
def test_an_unterminated_event_is_bounded(name, size, refused):
    g, closed = guard(max_event=64)
    g(b"x" * size)
    assert bool(closed) == refused


def test_gzip_streams_are_decoded_before_scanning():
    data = gzip.compress(b"data: hello\n\ndata: " + AWS.encode() + b"\n\n")
    g, closed = guard(decoder=zlib.decompressobj(wbits=31))
    out = g(data[:10]) + g(data[10:])
    assert out.startswith(b"data: hello\n\n") and closed and closed[0].kind == "response_blocked"


def test_a_decompression_bomb_is_refused():
    g, closed = guard(decoder=zlib.decompressobj(wbits=31), cap=1 << 20)
    g(gzip.compress(b"\n" * (4 << 20)))
    assert closed and closed[0].kind == "response_too_large"


def test_transform_rewrites_data_and_a_failing_transform_refuses():
    g, _ = guard(transform=lambda d: json.dumps({"x": json.loads(d)["x"] + 1}))
    assert g(b'event: message\ndata: {"x": 1}\n\n') == b'event: message\ndata: {"x": 2}\n\n'
    g, closed = guard(transform=lambda d: json.loads(d))
    g(b"data: not json\n\n")
    assert closed[0].kind == "inspection_error"


def test_stream_log_keeps_a_prefix_and_hashes_everything():
    log = StreamLog(5)
    log.add(b"abc")
    log.add(b"defgh")
    assert bytes(log.kept) == b"abcde" and log.total == 8
    assert log.sha256 == hashlib.sha256(b"abcdefgh").hexdigest()


class Recorder(list):
    def __call__(self, result, target):
        self.extend(result.matches)


def chunk_guard(sc=SC, cap=None):
    closed = Closed()
    rec = Recorder()
    return ChunkGuard(sc, rec, cap=cap, on_refuse=closed), closed, rec


def feed(g, data: bytes, size: int) -> bytes:
    out = b"".join(g(data[i:i + size]) for i in range(0, len(data), size))
    return out + g(b"")


@pytest.mark.parametrize("chunk", [7, 1000, 4096, 65536])
def test_large_bodies_pass_unchanged_when_clean(chunk):
    data = ("line of clean text é\n" * 2000).encode()
    g, closed, _ = chunk_guard()
    assert feed(g, data, chunk) == data and not closed


@pytest.mark.parametrize("chunk", [7, 4096, 65536])
def test_a_secret_across_a_chunk_boundary_is_blocked_before_it_is_forwarded(chunk):
    data = b"x " * 10000 + AWS.encode() + b" tail" * 10
    g, closed, rec = chunk_guard()
    out = feed(g, data, chunk)
    assert closed and closed[0].kind == "response_blocked"
    assert AWS.encode() not in out and [m.filter for m in rec] == ["aws"]


@pytest.mark.parametrize("chunk", [64, 4096, 65536])
def test_redaction_in_a_streamed_body(chunk):
    data = b"a " * 10000 + b"write to bob@example.com please " + b"b " * 10000
    g, closed, _ = chunk_guard()
    out = feed(g, data, chunk)
    assert out == data.replace(b"bob@example.com", b"[REDACTED:email]") and not closed


@pytest.mark.parametrize("name, cap, refused", [("at the cap", 1000, False), ("over the cap", 999, True)])
def test_the_cap_cuts_a_streamed_body(name, cap, refused):
    g, closed, _ = chunk_guard(cap=cap)
    feed(g, b"z" * 1000, 100)
    assert bool(closed) == refused


def test_without_filters_bytes_pass_as_they_come():
    g, closed, _ = chunk_guard(sc=None)
    assert g(b"\xff\xfe raw") == b"\xff\xfe raw" and g(b"") == b""


@pytest.mark.parametrize("name, buf, final, lines, rest", [
    ("two records and a partial one", b'{"a":1}\n{"b":2}\n{"c"', False, [b'{"a":1}\n', b'{"b":2}\n'], b'{"c"'),
    ("CRLF records", b'{"a":1}\r\n', False, [b'{"a":1}\r\n'], b""),
    ("nothing complete", b'{"a":', False, [], b'{"a":'),
    ("the end flushes the partial record", b'{"a":1}', True, [b'{"a":1}'], b""),
])
def test_split_lines(name, buf, final, lines, rest):
    assert split_lines(buf, final) == (lines, rest)


def test_json_lines_are_checked_record_by_record():
    g, closed = guard(split=split_lines)
    assert g(b'{"msg": "hi"}\n{"msg": "mail bob@exa') == b'{"msg": "hi"}\n'
    assert g(b'mple.com"}\n') == b'{"msg": "mail [REDACTED:email]"}\n'
    out = g(b'{"k": "' + AWS.encode() + b'"}\n{"after": 1}\n')
    assert AWS.encode() not in out and b"after" not in out and closed[0].kind == "response_blocked"
