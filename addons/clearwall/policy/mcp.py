"""JSON-RPC 2.0 / MCP message parsing (pure): what a request body asks for, and tools/list filtering.

A body is JSON-RPC when it is one object with `"jsonrpc": "2.0"`, or a non-empty array of such
objects (a batch). Anything else is "not JSON-RPC" (`parse_body` returns None) and goes through
the ordinary rules. A body that claims JSON-RPC but is malformed raises ValueError: the adapter
refuses it rather than guess what the server will read.

Duplicate object keys are refused: `{"name": "allowed", "name": "evil"}` would be read
differently by different JSON parsers, and the tool decision must see what the server sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TOOLS_CALL = "tools/call"
TOOLS_LIST = "tools/list"
SESSION_HEADER = "mcp-session-id"


@dataclass(frozen=True)
class Call:
    """One JSON-RPC message of a body: a request (has an id), a notification, or a response."""

    method: str | None  # None for a response (result/error) sent by a client
    id: Any = None
    has_id: bool = False
    tool: str | None = None  # params.name of tools/call
    arguments: Any = None  # params.arguments of tools/call


@dataclass(frozen=True)
class JsonRpc:
    calls: tuple[Call, ...]
    batch: bool = False

    @property
    def tools(self) -> tuple[str, ...]:
        return tuple(c.tool for c in self.calls if c.tool is not None)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(c.method for c in self.calls if c.method is not None)

    @property
    def request_ids(self) -> tuple[Any, ...]:
        """Ids of the requests (messages expecting an answer), in order."""
        return tuple(c.id for c in self.calls if c.method is not None and c.has_id)

    @property
    def first(self) -> Call:
        return self.calls[0]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate JSON key {k!r}")
        out[k] = v
    return out


def loads_strict(text: str | bytes) -> Any:
    """json.loads refusing duplicate keys (ValueError)."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _is_jsonrpc(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("jsonrpc") == "2.0"


def _call(obj: dict[str, Any]) -> Call:
    method = obj.get("method")
    has_id = "id" in obj
    ident = obj.get("id")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, (str, int, float))):
        raise ValueError("JSON-RPC id must be a string, a number or null")
    if method is None:
        if "result" not in obj and "error" not in obj:
            raise ValueError("JSON-RPC message has neither a method nor a result or error")
        return Call(None, ident, has_id)
    if not isinstance(method, str) or not method:
        raise ValueError("JSON-RPC method must be a non-empty string")
    if method != TOOLS_CALL:
        return Call(method, ident, has_id)
    params = obj.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("name"), str) or not params["name"]:
        raise ValueError("tools/call without a tool name (params.name)")
    return Call(method, ident, has_id, params["name"], params.get("arguments"))


def parse_document(doc: Any) -> JsonRpc | None:
    """JsonRpc for a decoded JSON document; None when it is not JSON-RPC; ValueError if malformed."""
    if _is_jsonrpc(doc):
        return JsonRpc((_call(doc),))
    if isinstance(doc, list) and doc and any(_is_jsonrpc(o) for o in doc):
        if not all(_is_jsonrpc(o) for o in doc):
            raise ValueError("JSON-RPC batch mixes JSON-RPC 2.0 objects and other values")
        return JsonRpc(tuple(_call(o) for o in doc), batch=True)
    return None


def parse_body(body: bytes) -> JsonRpc | None:
    """Parse a request body. None: not JSON (or not JSON-RPC). ValueError: JSON-RPC but malformed."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if not body or body.lstrip()[:1] not in (b"{", b"["):
        return None
    if b"jsonrpc" not in body and b"\\u" not in body:
        # JSON-RPC needs a "jsonrpc" member; in JSON text that key is either literal or spelled
        # with \u escapes. Neither present: not JSON-RPC, without parsing every JSON body.
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if parse_document(doc) is None:
        return None
    return parse_document(loads_strict(text))  # duplicate keys only matter for JSON-RPC bodies


def arguments_text(call: Call) -> str:
    """The tools/call arguments as the `mcp.arguments` filter target sees them (JSON, unescaped)."""
    return json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"), sort_keys=False)


def filter_tools_list(doc: Any, allows: Callable[[str], bool]) -> tuple[Any, list[str]]:
    """Drop tools the destination does not allow from a tools/list result (or batch of results).

    Returns (document, removed names). Anything that is not a tools/list result is returned as is.
    """
    removed: list[str] = []

    def one(msg: Any) -> Any:
        if not _is_jsonrpc(msg) or not isinstance(msg.get("result"), dict):
            return msg
        tools = msg["result"].get("tools")
        if not isinstance(tools, list):
            return msg
        kept = []
        for t in tools:
            name = t.get("name") if isinstance(t, dict) else None
            if isinstance(name, str) and allows(name):
                kept.append(t)
            else:
                removed.append(name if isinstance(name, str) else "(unnamed)")
        return {**msg, "result": {**msg["result"], "tools": kept}}

    out = [one(m) for m in doc] if isinstance(doc, list) else one(doc)
    return out, removed
