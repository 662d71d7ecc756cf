"""WebSocket messages (SPEC §3, §5): every message, both directions, scanned and logged.

mitmproxy reassembles fragmented messages before `websocket_message`. Each one is scanned by
the `websocket` filters: `redact` rewrites it, `block` drops it (`message.drop()`: killing the
flow would still forward it) and closes the connection with 1008 (policy violation) on both
sides. Messages go to `FlowState.ws_messages`; the body log writes the connection's record at
`websocket_end`.

Closing with a code has no public API in mitmproxy: `close_1008` queues a close event on the
WebSocket layer of the flow and wakes that layer with an empty injected message (dropped here).
If that fails the connection is cut instead — the message is dropped either way.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import ctx, http

from clearwall.audit.record import Message
from clearwall.content.inspect import inspect_text
from clearwall.mitm.content import note_matches, scanner
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.mitm.streams import close_client
from clearwall.policy.decision import Refusal

log = logging.getLogger("clearwall")
POLICY_VIOLATION = 1008
THREAD_THRESHOLD = 16 * 1024


def _ws_layer(flow: http.HTTPFlow):
    """The WebsocketLayer relaying this flow, found by walking the connection's layer tree."""
    from mitmproxy.proxy.layers.websocket import WebsocketLayer

    handler = ctx.master.addons.get("proxyserver").connections[flow.client_conn.id]
    todo, seen = [handler.layer], set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, WebsocketLayer) and node.flow is flow:
            return node
        for attr in ("layer", "child_layer"):
            todo.append(getattr(node, attr, None))
        for attr in ("_handle_event", "handle_event"):  # some layers keep their child only as a bound method
            todo.append(getattr(getattr(node, attr, None), "__self__", None))
        for attr in ("streams", "connections"):
            value = getattr(node, attr, None)
            if isinstance(value, dict):
                todo.extend(v for v in value.values() if hasattr(v, "handle_event"))
    return None


def close_1008(flow: http.HTTPFlow, reason: str) -> None:
    import wsproto.events
    from mitmproxy import websocket
    from mitmproxy.proxy.layers.websocket import WebSocketMessageInjected
    from wsproto.frame_protocol import Opcode

    try:
        layer = _ws_layer(flow)
        if layer is None:
            raise LookupError("no WebSocket layer for the flow")
        layer.client_ws._events.append(wsproto.events.CloseConnection(code=POLICY_VIOLATION, reason=reason[:100]))
        wake = websocket.WebSocketMessage(Opcode.TEXT, True, b"")
        ctx.master.addons.get("proxyserver").inject_event(WebSocketMessageInjected(flow, wake))
    except Exception:  # noqa: BLE001 - fall back to cutting the connection
        log.exception("could not close WebSocket flow %s with 1008; cutting it", flow.id)
        close_client(flow)


class WebSockets:
    name = "clearwall-websocket"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @guarded
    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        msg = flow.websocket.messages[-1]
        if st.ws_closing:
            msg.drop()  # nothing passes once a message was blocked (and the wake-up message)
            return
        rules = st.rules or self.runtime.rules
        direction = "client" if msg.from_client else "server"
        action = "allowed"
        if rules is not None and any("websocket" in f.where for f in rules.filters):
            text = msg.content.decode("utf-8", "surrogateescape")
            sc = scanner(rules)
            # Large messages are scanned off the event loop; the layer waits for this hook.
            result = (await asyncio.to_thread(inspect_text, sc, "websocket", text) if len(text) > THREAD_THRESHOLD
                      else inspect_text(sc, "websocket", text))
            # One entry per filter and target, one would-block per filter, for the connection.
            note_matches(st, result, "a WebSocket message", "content_blocked", once=True)
            refusal = None
            if result.error is not None:
                refusal = Refusal("inspection_error", "content-inspection", "a WebSocket message could not be inspected")
            elif result.blocked_by is not None:
                refusal = Refusal("content_blocked", result.blocked_by,
                                  f"filter {result.blocked_by} matched a WebSocket message from the {direction}")
            if refusal is not None:
                msg.drop()
                st.refusal, st.ws_closing = refusal, True
                st.ws_messages.append(Message(direction, msg.timestamp, msg.content, "blocked"))
                close_1008(flow, refusal.message)
                return
            if isinstance(result.redacted, str):
                msg.content = result.redacted.encode("utf-8", "surrogateescape")
                st.redacted, action = True, "redacted"
        st.ws_messages.append(Message(direction, msg.timestamp or time.time(), msg.content, action))
        # mitmproxy keeps every message for the connection's life; the log keeps its own list.
        del flow.websocket.messages[:-1]
