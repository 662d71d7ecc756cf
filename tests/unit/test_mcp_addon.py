"""The MCP addon on mitmproxy test flows: tool decisions, JSON-RPC refusals, batches, arguments, tools/list."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from mitmproxy.test import taddons, tflow, tutils

from clearwall.mitm.access import Access
from clearwall.mitm.mcp import Mcp
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.loader import load_rules

AWS = "AKIAPYCDYBK377OXTZQ6"
RULES = """
version: 1
destinations:
  - name: remote-mcp
    hosts: [address]
    ports: [22]
    mcp: {tools: ["search_*"]}
  - name: plain-api
    hosts: [other]
    ports: [22]
filters:
  - name: aws-access-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{16}\\b'
    where: [mcp.arguments]
    action: block
  - name: email-address
    pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+'
    where: [mcp.arguments]
    action: redact
"""


@pytest.fixture
def runtime(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RULES)
    return Runtime(rules=load_rules(p, environ={}))


def call(tool, ident=1, **args):
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": tool, "arguments": args}}


def run(runtime, body: bytes, host="address", headers=()):
    f = tflow.tflow(req=tutils.treq(host=host, port=22, method=b"POST", path=b"/mcp", content=body,
                                    headers=((b"content-type", b"application/json"), *headers)))
    f.request.headers.pop("host", None)
    access, mcp = Access(runtime), Mcp(runtime)
    with taddons.context(access, mcp):
        access.requestheaders(f)
        asyncio.run(mcp.request(f))
        if f.response is not None:
            mcp.response(f)
    return f


def answer(f):
    return json.loads(f.response.content)


def test_an_allowed_tool_passes_and_is_remembered(runtime):
    f = run(runtime, json.dumps(call("search_repos", q="x")).encode(), headers=((b"mcp-session-id", b"s-1"),))
    assert f.response is None
    assert flow_state(f).mcp == {"method": "tools/call", "tool": "search_repos", "id": 1, "session": "s-1"}


@pytest.mark.parametrize("name, ident", [("a number id", 7), ("a string id", "req-7")])
def test_a_tool_the_destination_does_not_allow_is_a_json_rpc_error_with_the_id(runtime, name, ident):
    f = run(runtime, json.dumps(call("delete_repo", ident)).encode())
    doc = answer(f)
    assert f.response.status_code == 200 and doc["id"] == ident and doc["error"]["code"] == -32001
    assert doc["error"]["data"]["error"] == "request_denied" and "delete_repo" in doc["error"]["message"]
    assert f.response.headers["X-Clearwall-Rule"] == "remote-mcp"


def test_a_batch_with_one_refused_tool_is_refused_whole_with_one_error_per_request(runtime):
    batch = [call("search_a", 1), {"jsonrpc": "2.0", "method": "notifications/x"}, call("delete_b", "two")]
    f = run(runtime, json.dumps(batch).encode())
    doc = answer(f)
    assert isinstance(doc, list) and [d["id"] for d in doc] == [1, "two"]
    assert all(d["error"]["data"]["error"] == "request_denied" for d in doc)


@pytest.mark.parametrize("name, body", [
    ("plain text", b"delete everything"),
    ("JSON that is not JSON-RPC", b'{"method": "tools/call"}'),
    ("a tools/call without a name", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call"}).encode()),
    ("duplicate name keys", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_a","name":"delete_b"}}'),
])
def test_an_mcp_destination_refuses_bodies_it_cannot_decide(runtime, name, body):
    f = run(runtime, body)
    assert f.response.status_code == 403 and answer(f)["error"] == "request_denied"


def test_a_compressed_body_is_decided_on_what_it_decodes_to(runtime):
    f = run(runtime, gzip.compress(json.dumps(call("delete_repo")).encode()), headers=((b"content-encoding", b"gzip"),))
    assert answer(f)["error"]["data"]["error"] == "request_denied"


def test_other_destinations_pass_bodies_that_are_not_json_rpc(runtime):
    f = run(runtime, b"not json", host="other")
    assert f.response is None and flow_state(f).mcp == {}


def test_tool_arguments_are_scanned(runtime):
    f = run(runtime, json.dumps(call("search_repos", q=f"key {AWS}")).encode())
    assert answer(f)["error"]["data"] == {**answer(f)["error"]["data"], "error": "content_blocked", "rule": "aws-access-key"}
    f = run(runtime, json.dumps(call("search_repos", q="mail bob@example.com")).encode())
    assert f.response is None
    assert json.loads(f.request.content)["params"]["arguments"] == {"q": "mail [REDACTED:email-address]"}
    assert flow_state(f).redacted


def tools_list_flow(runtime, result_body: bytes):
    f = run(runtime, json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}).encode())
    f.response = tutils.tresp(content=result_body, headers=((b"content-type", b"application/json"),))
    with taddons.context(Mcp(runtime)) as _:
        Mcp(runtime).response(f)
    return f


def test_tools_list_results_are_filtered_to_allowed_tools(runtime):
    result = {"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": "search_a"}, {"name": "delete_b"}]}}
    f = tools_list_flow(runtime, json.dumps(result).encode())
    assert answer(f)["result"]["tools"] == [{"name": "search_a"}]
    assert flow_state(f).mcp["tools_removed"] == ["delete_b"]
    assert f.response.headers["content-length"] == str(len(f.response.content))


def test_a_tools_list_result_that_cannot_be_read_is_refused(runtime):
    f = tools_list_flow(runtime, b"{broken")
    assert f.response.status_code == 200 and answer(f)["error"]["data"]["error"] == "inspection_error"


def test_in_report_mode_an_undecidable_body_is_a_would_block_not_a_refusal(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RULES.replace("settings", "x").replace("version: 1\n", "version: 1\nsettings: {mode: report}\n"))
    rt = Runtime(rules=load_rules(p, environ={}))
    f = run(rt, b"delete everything")
    assert f.response is None
    assert [(r.kind, r.rule) for r in flow_state(f).would_block] == [("request_denied", "remote-mcp")]
    f = run(rt, json.dumps(call("delete_repo")).encode())
    assert f.response is None and flow_state(f).would_block[0].kind == "request_denied"


def test_other_destinations_refuse_tool_arguments_the_filters_cannot_read(runtime):
    body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"q":"x"}},'
            b'"params":{"name":"a","arguments":{"q":"' + AWS.encode() + b'"}}}')
    f = run(runtime, body, host="other")
    assert f.response.status_code == 502 and flow_state(f).refusal.kind == "inspection_error"
