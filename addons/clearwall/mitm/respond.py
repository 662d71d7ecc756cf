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


def refuse_at_headers(flow: http.HTTPFlow, refusal: Refusal) -> None:
    """Refuse at response headers: the upstream body is drained and dropped, never forwarded.

    Replacing flow.response alone is not enough there: mitmproxy still reads the upstream body
    into it afterwards (an endless event stream, for one) and sends that."""
    refuse(flow, refusal)
    body = flow.response.content
    flow.response.stream = lambda chunk: body if chunk == b"" else []  # [] sends nothing


def inspection_error(flow: http.HTTPFlow, where: str, *, at_headers: bool = False) -> None:
    """The fail-closed answer: whatever went wrong, this flow is not forwarded uninspected.
    `at_headers`: the response body has not been read yet (responseheaders)."""
    refusal = Refusal("inspection_error", "clearwall", f"internal error while inspecting ({where})")
    (refuse_at_headers if at_headers else refuse)(flow, refusal)
