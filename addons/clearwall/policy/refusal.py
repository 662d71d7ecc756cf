"""What a refused client receives (SPEC §4): status, JSON body and X-Clearwall headers."""

from __future__ import annotations

import json
from typing import Any

from clearwall.policy.decision import Refusal

PROXY_AUTHENTICATE = 'Basic realm="clearwall"'
JSONRPC_REFUSED = -32001


def body(refusal: Refusal, flow_id: str) -> dict[str, Any]:
    return {"error": refusal.kind, "rule": refusal.rule, "message": refusal.message, "id": flow_id}


def headers(refusal: Refusal, flow_id: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {
        "Content-Type": "application/json",
        "X-Clearwall-Rule": refusal.rule,
        "X-Clearwall-Id": flow_id,
        "Cache-Control": "no-store",
    }
    if refusal.kind == "auth_required":
        h["Proxy-Authenticate"] = PROXY_AUTHENTICATE
    h.update(extra or {})
    return h


def render(refusal: Refusal, flow_id: str, extra_headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body bytes, headers) for an HTTP refusal."""
    data = json.dumps(body(refusal, flow_id), ensure_ascii=False).encode()
    return refusal.status, data, headers(refusal, flow_id, extra_headers)


def render_jsonrpc(refusal: Refusal, flow_id: str, request_id: Any,
                   extra_headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """MCP clients surface a JSON-RPC error; an HTTP error status would end their session."""
    data = json.dumps({
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": JSONRPC_REFUSED, "message": refusal.message, "data": body(refusal, flow_id)},
    }, ensure_ascii=False).encode()
    return 200, data, headers(refusal, flow_id, extra_headers)
