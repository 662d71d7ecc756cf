"""The Streams addon's decision at response headers: what is streamed, what stays buffered."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import taddons, tflow, tutils

from clearwall.mitm.access import Access
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.mitm.streams import StreamLog, Streams
from clearwall.policy.loader import load_rules

RULES = """
version: 1
destinations:
  - name: api
    hosts: [address]
    ports: [22]
    mcp: {tools: ["search_*"]}
filters:
  - name: aws-access-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{16}\\b'
    where: [sse, response.body]
    action: block
"""


@pytest.fixture
def runtime(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RULES)
    return Runtime(rules=load_rules(p, environ={}))


def decide(runtime, headers: dict[str, str], threshold=1000, method=None):
    f = tflow.tflow(resp=False)
    f.request.headers.pop("host", None)
    access, streams = Access(runtime), Streams(runtime, stream_threshold=threshold)
    with taddons.context(access, streams):
        access.requestheaders(f)
        if method:
            flow_state(f).mcp["method"] = method
        f.response = tutils.tresp(headers=tuple((k.encode(), v.encode()) for k, v in headers.items()), content=b"")
        streams.responseheaders(f)
    return f


SSE = "text/event-stream; charset=utf-8"


@pytest.mark.parametrize("name, headers, method, streamed", [
    ("an event stream", {"content-type": SSE}, None, True),
    ("a JSON Lines stream without a length", {"content-type": "application/x-ndjson"}, None, True),
    ("a JSON Lines body with a length", {"content-type": "application/x-ndjson", "content-length": "10"}, None, False),
    ("a gzip event stream", {"content-type": SSE, "content-encoding": "gzip"}, None, True),
    ("a body over the threshold", {"content-type": "text/plain", "content-length": "1001"}, None, True),
    ("a body at the threshold", {"content-type": "text/plain", "content-length": "1000"}, None, False),
    ("a UTF-16 body over the threshold", {"content-type": "text/plain; charset=utf-16", "content-length": "1001"}, None, False),
    ("a Latin-1 body over the threshold", {"content-type": "text/plain; charset=iso-8859-1", "content-length": "1001"}, None, True),
    ("a compressed body over the threshold", {"content-length": "5000", "content-encoding": "gzip"}, None, False),
    ("chunked without a length", {"content-type": "application/json", "transfer-encoding": "chunked"}, None, False),
    ("a large tools/list result of an MCP destination", {"content-length": "5000"}, "tools/list", False),
    ("a tools/list result as JSON Lines", {"content-type": "application/x-ndjson"}, "tools/list", False),
])
def test_what_is_streamed(runtime, name, headers, method, streamed):
    f = decide(runtime, headers, method=method)
    assert callable(f.response.stream) == streamed
    assert isinstance(flow_state(f).stream_log, StreamLog) == streamed


def test_a_gzip_event_stream_is_forwarded_decoded_and_chunked(runtime):
    f = decide(runtime, {"content-type": SSE, "content-encoding": "gzip", "content-length": "30"})
    h = f.response.headers
    assert "content-encoding" not in h and "content-length" not in h and h["transfer-encoding"] == "chunked"


def test_an_event_stream_in_brotli_is_refused_and_its_body_dropped(runtime):
    f = decide(runtime, {"content-type": SSE, "content-encoding": "br"})
    assert f.response.status_code == 502 and json.loads(f.response.content)["error"] == "inspection_error"
    assert f.response.stream(b"data: anything\n\n") == []
    assert json.loads(f.response.stream(b""))["error"] == "inspection_error"


def test_the_stream_callable_never_returns_empty_bytes(runtime):
    f = decide(runtime, {"content-type": SSE})
    assert f.response.stream(b"data: par") == []  # b"" would end a chunked body
    assert f.response.stream(b"tial\n\n") == [b"data: partial\n\n"]


def test_an_exception_in_the_stream_fails_closed(runtime, monkeypatch):
    import clearwall.mitm.streams as streams_mod

    f = decide(runtime, {"content-type": SSE})
    monkeypatch.setattr(streams_mod.SseGuard, "_event", lambda self, raw: 1 / 0)
    monkeypatch.setattr(streams_mod, "close_client", lambda flow: True)
    out = b"".join(f.response.stream(b"data: x\n\n"))
    assert b"inspection_error" in out and flow_state(f).refusal.kind == "inspection_error"
    assert f.response.stream(b"data: more\n\n") == []


@pytest.mark.parametrize("threshold", [0, -1])
def test_limits_must_be_positive(runtime, threshold):
    with pytest.raises(ValueError):
        Streams(runtime, stream_threshold=threshold)


def test_report_mode_findings_are_recorded_once_per_filter_on_a_long_stream(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RULES.replace("version: 1\n", "version: 1\nsettings: {mode: report}\n"))
    rt = Runtime(rules=load_rules(p, environ={}))
    f = decide(rt, {"content-type": SSE})
    for _ in range(50):
        out = f.response.stream(b"data: key AKIAPYCDYBK377OXTZQ6\n\n")
        assert out == [b"data: key AKIAPYCDYBK377OXTZQ6\n\n"]  # report mode refuses nothing
    st = flow_state(f)
    assert [(r.kind, r.rule) for r in st.would_block] == [("response_blocked", "aws-access-key")]
    assert st.refusal is None
    assert [(m["where"], m["mode"]) for m in st.matches] == [("sse", "report"), ("response.body", "report")]
