"""Turning a policy Refusal into what mitmproxy sends, and remembering it on the flow."""

from __future__ import annotations

import logging

from mitmproxy import http

from clearwall.mitm.state import flow_state
from clearwall.policy import refusal as shape
from clearwall.policy.decision import Refusal

log = logging.getLogger("clearwall")


def refuse(flow: http.HTTPFlow, refusal: Refusal, extra_headers: dict[str, str] | None = None) -> None:
    """Answer the flow with the SPEC §4 refusal (a JSON-RPC error for MCP requests)."""
    state = flow_state(flow)
    state.refusal = refusal
    if state.mcp_request_id is not None and refusal.kind not in ("auth_required", "rate_limited"):
        status, body, headers = shape.render_jsonrpc(refusal, flow.id, state.mcp_request_id, extra_headers)
    else:
        status, body, headers = shape.render(refusal, flow.id, extra_headers)
    flow.response = http.Response.make(status, body, headers)


def inspection_error(flow: http.HTTPFlow, where: str) -> None:
    """The fail-closed answer: whatever went wrong, this flow is not forwarded uninspected."""
    refuse(flow, Refusal("inspection_error", "clearwall", f"internal error while inspecting ({where})"))
