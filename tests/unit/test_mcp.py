"""JSON-RPC / MCP parsing (policy/mcp.py): what a body asks for, and tools/list filtering."""

from __future__ import annotations

import json

import pytest

from clearwall.policy import mcp


def body(doc) -> bytes:
    return json.dumps(doc).encode()


CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search_repos", "arguments": {"q": "x"}}}


@pytest.mark.parametrize("name, raw, method, tool, ident", [
    ("a tools/call request", body(CALL), "tools/call", "search_repos", 7),
    ("a tools/list request with a string id", body({"jsonrpc": "2.0", "id": "a", "method": "tools/list"}), "tools/list", None, "a"),
    ("an initialize request", body({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}), "initialize", None, 0),
    ("a notification (no id)", body({"jsonrpc": "2.0", "method": "notifications/initialized"}), "notifications/initialized", None, None),
    ("a UTF-8 BOM and whitespace", b"\xef\xbb\xbf  " + body(CALL), "tools/call", "search_repos", 7),
])
def test_single_messages_are_parsed(name, raw, method, tool, ident):
    parsed = mcp.parse_body(raw)
    assert parsed is not None and not parsed.batch
    c = parsed.first
    assert (c.method, c.tool, c.id) == (method, tool, ident)


@pytest.mark.parametrize("name, raw", [
    ("an empty body", b""),
    ("plain JSON", body({"query": "tools/call"})),
    ("JSON-RPC 1.0", body({"jsonrpc": "1.0", "id": 1, "method": "tools/call"})),
    ("not JSON at all", b"tools/call search_repos"),
    ("broken JSON", b'{"jsonrpc": "2.0", "method": '),
    ("an empty array", b"[]"),
    ("a form body", b"a=1&b=2"),
])
def test_bodies_that_are_not_json_rpc_are_none(name, raw):
    assert mcp.parse_body(raw) is None


@pytest.mark.parametrize("name, raw", [
    ("tools/call without a name", body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}})),
    ("tools/call with a numeric name", body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 3}})),
    ("tools/call without params", body({"jsonrpc": "2.0", "id": 1, "method": "tools/call"})),
    ("a duplicate tool name key", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","name":"delete_all"}}'),
    ("a duplicate method key", b'{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"a"}}'),
    ("an object as id", body({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"})),
    ("a boolean id", body({"jsonrpc": "2.0", "id": True, "method": "ping"})),
    ("an empty method", body({"jsonrpc": "2.0", "id": 1, "method": ""})),
    ("neither method nor result", body({"jsonrpc": "2.0", "id": 1})),
    ("a batch mixing other values", body([CALL, {"x": 1}])),
])
def test_malformed_json_rpc_raises(name, raw):
    with pytest.raises(ValueError):
        mcp.parse_body(raw)


def test_a_batch_lists_every_tool_and_request_id():
    batch = [CALL, {"jsonrpc": "2.0", "method": "notifications/x"},
             {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "delete_repo"}},
             {"jsonrpc": "2.0", "id": 9, "result": {}}]
    parsed = mcp.parse_body(body(batch))
    assert parsed.batch
    assert parsed.tools == ("search_repos", "delete_repo")
    assert parsed.request_ids == (7, "b")
    assert parsed.methods == ("tools/call", "notifications/x", "tools/call")


def test_arguments_are_serialised_unescaped_for_the_filters():
    parsed = mcp.parse_body(body({**CALL, "params": {"name": "t", "arguments": {"note": "café AKIA"}}}))
    assert mcp.arguments_text(parsed.first) == '{"note":"café AKIA"}'


def tools_result(*names, ident=1):
    return {"jsonrpc": "2.0", "id": ident, "result": {"tools": [{"name": n, "description": "d"} for n in names]}}


@pytest.mark.parametrize("name, doc, kept, removed", [
    ("a single result", tools_result("search_a", "delete_b", "get_c"), ["search_a", "get_c"], ["delete_b"]),
    ("nothing to remove", tools_result("search_a"), ["search_a"], []),
    ("everything removed", tools_result("delete_b"), [], ["delete_b"]),
    ("an unnamed tool is removed", {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"description": "?"}]}}, [], ["(unnamed)"]),
])
def test_tools_list_results_keep_only_allowed_tools(name, doc, kept, removed):
    allows = lambda n: n.startswith(("search_", "get_"))  # noqa: E731
    out, gone = mcp.filter_tools_list(doc, allows)
    assert [t["name"] for t in out["result"]["tools"]] == kept
    assert gone == removed


def test_a_batch_of_tools_list_results_is_filtered_and_other_messages_kept():
    other = {"jsonrpc": "2.0", "id": 2, "result": {"content": []}}
    out, gone = mcp.filter_tools_list([tools_result("x", "search_y"), other], lambda n: n != "x")
    assert out[0]["result"]["tools"] == [{"name": "search_y", "description": "d"}]
    assert out[1] == other and gone == ["x"]


@pytest.mark.parametrize("body, is_rpc", [
    (b'{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}, "id": 1}', True),
    (b'{"\\u006asonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}, "id": 1}', True),
    (b'{"items": [1, 2, 3], "note": "plain JSON"}', False),
    (b'{"note": "\\u00e9t\\u00e9"}', False),
])
def test_the_cheap_jsonrpc_precheck_never_hides_an_escaped_key(body, is_rpc):
    from clearwall.policy.mcp import parse_body

    assert (parse_body(body) is not None) is is_rpc
