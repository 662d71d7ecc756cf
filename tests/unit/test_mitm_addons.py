"""Addon-level tests with mitmproxy's test helpers: the guard turns any exception into a refusal."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import taddons, tflow

from clearwall.mitm import access as access_mod
from clearwall.mitm.access import Access
from clearwall.mitm.bodylog import LogGate
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.loader import load_rules


@pytest.fixture
def runtime(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\ndestinations:\n  - name: addr\n    hosts: [address]\n    ports: [22]\n")
    return Runtime(rules=load_rules(p, environ={}))


def _refusal(flow) -> dict:
    return json.loads(flow.response.content)


def test_a_raising_decision_refuses_the_request_with_inspection_error(runtime, monkeypatch):
    def boom(*a, **k):
        raise ValueError("bug")

    monkeypatch.setattr(access_mod, "decide", boom)
    addon = Access(runtime)
    with taddons.context(addon):
        f = tflow.tflow()
        addon.requestheaders(f)
    assert f.response.status_code == 502
    assert _refusal(f)["error"] == "inspection_error"
    assert f.response.headers["X-Clearwall-Id"] == f.id
    assert flow_state(f).refusal.kind == "inspection_error"


def test_a_raising_async_hook_refuses_too(runtime):
    import asyncio

    from clearwall.mitm.upstream import Upstream

    class BrokenResolver:
        async def resolve(self, host, overrides):
            raise RuntimeError("resolver bug")

    addon = Upstream(runtime, BrokenResolver())
    with taddons.context(addon):
        f = tflow.tflow()
        asyncio.run(addon.requestheaders(f))
    assert f.response.status_code == 502 and _refusal(f)["error"] == "inspection_error"


def test_allowed_request_passes_untouched(runtime):
    addon = Access(runtime)
    with taddons.context(addon):
        f = tflow.tflow()  # GET http://address:22/path
        addon.requestheaders(f)
    assert f.response is None
    assert flow_state(f).decision.destination == "addr"


def test_denied_request_gets_the_spec_body_and_headers(runtime):
    addon = Access(runtime)
    with taddons.context(addon):
        f = tflow.tflow()
        f.request.host = "elsewhere.example"
        f.request.headers["host"] = "elsewhere.example"
        addon.requestheaders(f)
    assert f.response.status_code == 403
    assert _refusal(f) == {"error": "destination_denied", "rule": "default",
                           "message": "no destination allows elsewhere.example:22", "id": f.id}
    assert f.response.headers["X-Clearwall-Rule"] == "default"


def test_log_gate_refuses_while_the_log_cannot_be_written(runtime):
    class Unwritable:
        writable = False

    runtime.writer = Unwritable()
    gate = LogGate(runtime)
    with taddons.context(gate):
        f = tflow.tflow()
        gate.requestheaders(f)
    assert f.response.status_code == 502
    assert _refusal(f)["error"] == "inspection_error" and _refusal(f)["rule"] == "body-log"


def test_a_response_to_a_flow_no_policy_decided_is_refused_not_passed(runtime):
    import asyncio

    from clearwall.mitm.content import ContentFilters

    addon = ContentFilters(runtime)
    with taddons.context(addon):
        f = tflow.tflow(resp=True)  # no Clearwall state: Access never decided this request
        asyncio.run(addon.response(f))
    assert f.response.status_code == 502 and _refusal(f)["error"] == "inspection_error"


def test_response_header_filters_decide_at_response_headers_before_a_stream_starts(tmp_path):
    from mitmproxy.test import tutils

    from clearwall.mitm.content import ContentFilters

    p = tmp_path / "r.yaml"
    p.write_text("version: 1\ndestinations:\n  - name: api\n    hosts: [address]\n    ports: [22]\n"
                 "filters:\n  - name: leak\n    pattern: 'sk-[a-z]{8}'\n    where: [response.headers]\n    action: block\n")
    rt = Runtime(rules=load_rules(p, environ={}))
    access, content = Access(rt), ContentFilters(rt)
    with taddons.context(access, content):
        f = tflow.tflow(resp=False)
        f.request.headers.pop("host", None)
        access.requestheaders(f)
        f.response = tutils.tresp(headers=((b"content-type", b"text/event-stream"), (b"x-key", b"sk-abcdefgh")), content=b"")
        content.responseheaders(f)
    assert f.response.status_code == 502 and _refusal(f)["error"] == "response_blocked"
    assert f.response.stream(b"data: upstream\n\n") == []  # the upstream body is dropped, not sent
