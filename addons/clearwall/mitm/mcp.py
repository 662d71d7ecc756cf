"""MCP awareness (SPEC §3): JSON-RPC request bodies parsed, tools decided, arguments scanned.

Runs in `request`, once the body is buffered and before the content filters scan it:
- the body (decoded, bounded) is parsed as JSON-RPC 2.0, single or batch; method, tool, id and
  Mcp-Session-Id go to `flow_state(flow).mcp` for the log, and the request id to
  `mcp_request_id` so every later refusal is a JSON-RPC error the MCP client can show;
- the destination is decided again with the tools/call names (`mcp: {tools: [...]}`);
- a destination with an `mcp` policy refuses bodies it cannot read as JSON-RPC (fail closed:
  the tool decision must never be skipped because a body was odd);
- `mcp.arguments` filters scan the JSON-serialised arguments of each tools/call.
In `response`: a refused batch is answered with one error per request of the batch, and
tools/list results (JSON) are filtered to the tools the destination allows. SSE responses are
filtered event by event in streams.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

from mitmproxy import http

from clearwall.content.decode import decode_content
from clearwall.content.errors import TooLarge
from clearwall.content.inspect import inspect_text
from clearwall.mitm import respond
from clearwall.mitm.content import SIZE_RULE, apply_inspection, caps, replace_body, scanner
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state
from clearwall.policy import mcp as rpc
from clearwall.policy.decision import Refusal
from clearwall.policy.engine import Target, decide
from clearwall.policy.ruleset import CompiledDestination

log = logging.getLogger("clearwall")
THREAD_THRESHOLD = 64 * 1024  # JSON parsing of larger bodies runs off the event loop
MAX_RATIO = 100.0


def destination_of(st: FlowState) -> CompiledDestination | None:
    if st.rules is None or st.decision is None or not st.decision.destination:
        return None
    return st.rules.destination(st.decision.destination)


def mcp_policy(st: FlowState) -> CompiledDestination | None:
    """The destination when it restricts MCP tools, else None."""
    d = destination_of(st)
    return d if d is not None and d.spec.mcp is not None else None


def _decoded(body: bytes, encoding: str | None, cap: int | None) -> bytes:
    if not encoding or encoding.strip().lower() == "identity":
        return body
    return decode_content(body, encoding, max_size=cap if cap is not None else 1 << 40, max_ratio=MAX_RATIO)


def _parse(body: bytes, encoding: str | None, cap: int | None) -> rpc.JsonRpc | None:
    return rpc.parse_body(_decoded(body, encoding, cap))


def _refuse(flow: http.HTTPFlow, st: FlowState, message: str) -> None:
    """request_denied by the MCP destination, or a would-block when that rule is in report mode."""
    dest = mcp_policy(st)
    refusal = Refusal("request_denied", dest.name, message)
    if dest.mode == "report":
        st.would_block.append(refusal)
    else:
        respond.refuse(flow, refusal)


class Mcp:
    name = "clearwall-mcp"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @guarded
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        if st.rules is None:
            return
        req = flow.request
        body = req.raw_content or b""
        strict = mcp_policy(st) is not None
        st.mcp["session"] = req.headers.get(rpc.SESSION_HEADER)
        if not st.mcp["session"]:
            st.mcp.pop("session")
        if not body:
            return
        try:
            encoding = req.headers.get("content-encoding")
            args = (body, encoding, caps(st.rules, st)[0])
            # Decompressing (up to 100x) or parsing a large body is thread work, not loop work.
            parsed = await asyncio.to_thread(_parse, *args) if len(body) > THREAD_THRESHOLD or encoding else _parse(*args)
        except Exception as e:  # noqa: BLE001 - undecodable or malformed
            if strict:
                _refuse(flow, st, f"MCP request body could not be read as JSON-RPC: {e}")
            elif any("mcp.arguments" in f.where for f in st.rules.filters):
                # Tool arguments the filters must see cannot be read (duplicate keys, a body that
                # does not decode): the server may read them differently. Refuse, never pass.
                if isinstance(e, TooLarge):
                    refusal = Refusal("request_too_large", SIZE_RULE, "request.body decodes past its size or 100:1 ratio cap")
                else:
                    refusal = Refusal("inspection_error", "content-inspection", f"MCP request body could not be read as JSON-RPC: {e}")
                respond.refuse(flow, refusal)
            return
        if parsed is None:
            if strict:
                _refuse(flow, st, "request body to an MCP destination is not JSON-RPC 2.0")
            return
        self._remember(st, parsed)
        if parsed.tools and not self._decide_tools(flow, st, parsed):
            return
        self._scan_arguments(flow, st, parsed)

    @staticmethod
    def _remember(st: FlowState, parsed: rpc.JsonRpc) -> None:
        first = next((c for c in parsed.calls if c.method is not None), parsed.first)
        st.mcp.update({"method": first.method, "tool": first.tool or (parsed.tools[0] if parsed.tools else None),
                       "id": first.id})
        ids = parsed.request_ids
        if ids:
            # Batches: the refusal of a batch answers every request in it (see response()).
            st.mcp_request_id = ids[0]
            if parsed.batch:
                st.mcp["batch_ids"] = list(ids)
        if parsed.batch:
            st.mcp["methods"] = list(parsed.methods)
            st.mcp["tools"] = list(parsed.tools)

    @staticmethod
    def _decide_tools(flow: http.HTTPFlow, st: FlowState, parsed: rpc.JsonRpc) -> bool:
        req = flow.request
        target = Target(req.host, req.port, req.scheme, st.identity.client if st.identity else None, req.method,
                        req.path, req.headers.get("content-type"), True, parsed.tools)
        decision = decide(st.rules, target)
        known = set(st.would_block)
        st.would_block.extend(r for r in decision.would_block if r not in known)
        st.decision = decision
        if decision.refusal is not None:
            respond.refuse(flow, decision.refusal)
            return False
        return True

    def _scan_arguments(self, flow: http.HTTPFlow, st: FlowState, parsed: rpc.JsonRpc) -> None:
        rules = st.rules
        if not any("mcp.arguments" in f.where for f in rules.filters):
            return
        sc = scanner(rules)
        redacted: dict[int, object] = {}
        for i, call in enumerate(parsed.calls):
            if call.tool is None:
                continue
            result = inspect_text(sc, "mcp.arguments", rpc.arguments_text(call))
            if apply_inspection(flow, st, result, "mcp.arguments", "content_blocked"):
                return
            if isinstance(result.redacted, str):
                redacted[i] = json.loads(result.redacted)
        if redacted:
            self._rewrite_arguments(flow, redacted)

    @staticmethod
    def _rewrite_arguments(flow: http.HTTPFlow, redacted: dict[int, object]) -> None:
        req = flow.request
        doc = rpc.loads_strict(_decoded(req.raw_content or b"", req.headers.get("content-encoding"), None))
        msgs = doc if isinstance(doc, list) else [doc]
        for i, args in redacted.items():
            msgs[i]["params"]["arguments"] = args
        replace_body(req, json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())

    # ----- responses --------------------------------------------------------------------

    @guarded
    def response(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        if st.refusal is not None:
            if st.mcp.get("batch_ids") and flow.response is not None:
                self._batch_refusal(flow, st.mcp["batch_ids"])
            return
        if st.mcp.get("method") != rpc.TOOLS_LIST or flow.response is None or flow.response.stream:
            return
        dest = mcp_policy(st)
        if dest is None or not flow.response.raw_content:
            return
        resp = flow.response
        try:
            doc = rpc.loads_strict(_decoded(resp.raw_content, resp.headers.get("content-encoding"),
                                            caps(st.rules, st)[1]))
        except Exception:  # noqa: BLE001 - a tools/list we cannot filter is not forwarded
            return respond.refuse(flow, Refusal("inspection_error", dest.name,
                                                "tools/list result could not be read to filter it"))
        doc, removed = rpc.filter_tools_list(doc, dest.allows_tool)
        if removed:
            st.mcp["tools_removed"] = removed
            replace_body(resp, json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())

    @staticmethod
    def _batch_refusal(flow: http.HTTPFlow, ids: list) -> None:
        try:
            one = json.loads(flow.response.content)
        except ValueError:
            return
        if not isinstance(one, dict) or "error" not in one or one.get("jsonrpc") != "2.0":
            return
        flow.response.content = json.dumps([{**one, "id": i} for i in ids], ensure_ascii=False).encode()
