"""TLS passthrough destinations and request-framing checks inside tunnels.

A `tls: passthrough` destination is relayed without decryption (certificate pinning), allowed by
SNI only: the relay starts only when the CONNECT was allowed for a passthrough destination and
the ClientHello's SNI names that same host. A ClientHello without SNI, or naming another host,
is refused by closing the connection (there is no HTTP to answer in a TLS handshake).

Why `next_layer` rather than `tls_clienthello` + `ignore_connection`: with `ignore_connection`
mitmproxy 11 relays through a TCP layer that calls no hook at all, so the bytes each way and the
end of the tunnel could not be recorded. Choosing a hooked TCP layer for the tunnel keeps every
byte counted (`tcp_message`) and gives `tcp_end` for the tunnel record, while the upstream
connection still passes `server_connect` (the SSRF check). `tls_clienthello` remains the
backstop: a handshake at a passthrough CONNECT that was not relayed is closed.

Plain requests to a passthrough destination (never decrypted, so nothing could be inspected),
requests carrying more than one Host header (smuggling: which one does the upstream read?) and
absolute-form targets inside a tunnel that name another host (fronting) are refused.
Conflicting Content-Length / Transfer-Encoding framing is already refused by mitmproxy (400).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mitmproxy import http, tcp
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.layers.tls import parse_client_hello, starts_like_tls_record
from mitmproxy.tls import ClientHelloData, TlsData

from clearwall.audit.errors import AuditError
from clearwall.audit.record import Exchange, tunnel_record
from clearwall.mitm import respond
from clearwall.mitm.access import MISMATCH_RULE, _authority_host, _same_host
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import Tunnel, flow_state
from clearwall.policy.decision import Refusal
from clearwall.policy.engine import Target, decide

log = logging.getLogger("clearwall")
PASSTHROUGH_RULE = "tls-passthrough"


@dataclass
class _Relay:
    tunnel: Tunnel
    destination: str
    sni: str | None
    started: float
    flow_id: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    action: str = "allowed"
    reason: str | None = None


def passthrough_destination(tunnel: Tunnel) -> str | None:
    """The passthrough destination the tunnel's CONNECT was allowed for, or None."""
    decision = decide(tunnel.rules, Target(tunnel.host, tunnel.port, "https", tunnel.identity.client))
    if not decision.allowed or decision.destination is None:
        return None
    d = tunnel.rules.destination(decision.destination)
    return d.name if d is not None and d.spec is not None and d.spec.tls == "passthrough" else None


def _has_tls_layer(stack) -> bool:
    return any(isinstance(x, (layers.ClientTLSLayer, layers.ServerTLSLayer)) for x in stack)


class Passthrough:
    name = "clearwall-passthrough"

    def __init__(self, runtime: Runtime, clock=time.time) -> None:
        self.runtime = runtime
        self.clock = clock
        self._relays: dict[str, _Relay] = {}  # client connection id -> relay being counted
        self._close: dict[str, str] = {}  # client connection id -> why its handshake is refused

    @guarded
    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        ctx = nextlayer.context
        tunnel = self.runtime.tunnels.get(ctx.client.id)
        proposed = nextlayer.layer  # mitmproxy's NextLayer addon has chosen already (it runs first)
        if tunnel is None or proposed is None or ctx.client.id in self._relays:
            return
        # A proposed layer has appended itself (and its children) to the shared context.layers.
        below = ctx.layers.index(proposed) if proposed in ctx.layers else len(ctx.layers)
        if _has_tls_layer(ctx.layers[:below]):
            return  # inside an established TLS layer: not the tunnel's first bytes
        dest = passthrough_destination(tunnel)
        if dest is None:
            return
        data = nextlayer.data_client()
        if not data or not starts_like_tls_record(data):
            return  # not TLS: the HTTP layer's requests are refused in requestheaders
        try:
            hello = parse_client_hello(data)
        except ValueError:
            self._close[ctx.client.id] = "the ClientHello cannot be parsed"
            return
        if hello is None:
            del ctx.layers[below:]
            nextlayer.layer = None  # wait for the whole ClientHello before deciding
            return
        reason = self._sni_problem(hello.sni, tunnel)
        if reason is not None:
            self._close[ctx.client.id] = reason  # refused at the handshake (tls_start_client)
            return
        self._relays[ctx.client.id] = _Relay(tunnel, dest, hello.sni, self.clock())
        del ctx.layers[below:]
        nextlayer.layer = layers.TCPLayer(ctx, ignore=False)

    @staticmethod
    def _sni_problem(sni: str | None, tunnel: Tunnel) -> str | None:
        if not sni:
            return f"ClientHello without SNI for the passthrough destination {tunnel.host}"
        if not _same_host(sni, tunnel.host):
            return f"TLS SNI {sni!r} does not match CONNECT {tunnel.host}"
        return None

    @guarded
    def tls_clienthello(self, data: ClientHelloData) -> None:
        client = data.context.client
        tunnel = self.runtime.tunnels.get(client.id)
        if tunnel is None or passthrough_destination(tunnel) is None:
            return
        # A passthrough destination is never decrypted: a handshake reaching here was not relayed.
        reason = self._close.get(client.id) or self._sni_problem(data.client_hello.sni, tunnel) \
            or "the tunnel to a passthrough destination was not relayed"
        self._close[client.id] = reason

    @guarded
    async def tls_start_client(self, data: TlsData) -> None:
        reason = self._close.pop(data.context.client.id, None)
        if reason is None:
            return
        tunnel = self.runtime.tunnels.get(data.context.client.id)
        log.warning("refused TLS handshake from %s: %s", data.context.client.peername[0], reason)
        # Without a TLS context mitmproxy closes the client connection: the refusal.
        data.ssl_conn = None
        if tunnel is not None:
            relay = _Relay(tunnel, passthrough_destination(tunnel) or PASSTHROUGH_RULE,
                           data.context.client.sni, self.clock(), action="blocked", reason=reason)
            await self._record(relay, data.context.client.peername)

    @guarded
    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        relay = self._relays.get(flow.client_conn.id)
        if relay is not None:
            relay.flow_id = flow.id

    @guarded
    def tcp_message(self, flow: tcp.TCPFlow) -> None:
        relay = self._relays.get(flow.client_conn.id)
        if relay is None or not flow.messages:
            return
        msg = flow.messages[-1]
        if msg.from_client:
            relay.bytes_up += len(msg.content)
        else:
            relay.bytes_down += len(msg.content)
        # The relay forwards the message object it holds; keeping the list would grow for the
        # tunnel's whole life.
        del flow.messages[:-1]

    @guarded
    async def tcp_end(self, flow: tcp.TCPFlow) -> None:
        relay = self._relays.pop(flow.client_conn.id, None)
        if relay is not None:
            await self._record(relay, flow.client_conn.peername, flow)

    @guarded
    async def tcp_error(self, flow: tcp.TCPFlow) -> None:
        relay = self._relays.pop(flow.client_conn.id, None)
        if relay is not None:
            relay.action, relay.reason = "error", flow.error.msg if flow.error else "tunnel error"
            await self._record(relay, flow.client_conn.peername, flow)

    async def _record(self, relay: _Relay, peer, flow: tcp.TCPFlow | None = None) -> None:
        w = self.runtime.writer
        if w is None:
            return
        t, ident = relay.tunnel, relay.tunnel.identity
        server = flow.server_conn.peername if flow is not None and flow.server_conn.peername else None
        rec = tunnel_record(Exchange(
            timestamp=relay.started, flow_id=relay.flow_id or f"tunnel-{id(relay):x}",
            duration=self.clock() - relay.started,
            rules=[relay.destination] if relay.action != "blocked" else [MISMATCH_RULE, relay.destination],
            sni=relay.sni, action=relay.action, reason=relay.reason, ruleset=t.rules.version,
            client_ip=peer[0], client_port=peer[1], client_user=ident.user, client_label=ident.client,
            dest_domain=t.host, dest_ip=server[0] if server else None, dest_port=t.port),
            bytes_up=relay.bytes_up, bytes_down=relay.bytes_down)
        try:
            await w.submit_async(rec)  # waits while the queue is full: a tunnel record is not dropped
        except AuditError as e:  # the writer is closed (shutting down)
            log.error("body log record lost: %s", e)

    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        hosts = flow.request.headers.get_all("host")
        if len(hosts) > 1:
            return respond.refuse(flow, Refusal("destination_denied", MISMATCH_RULE,
                                                f"the request carries {len(hosts)} Host headers"))
        refusal = self._absolute_form_mismatch(flow)
        if refusal is not None:
            return respond.refuse(flow, refusal)
        dest = st.decision.destination if st.decision else None
        rules = st.rules
        if dest is None or rules is None:
            return
        d = rules.destination(dest)
        if d is not None and d.spec is not None and d.spec.tls == "passthrough":
            return respond.refuse(flow, Refusal(
                "destination_denied", dest,
                f"destination {dest} is tls: passthrough: only TLS naming it by SNI is relayed"))

    def _absolute_form_mismatch(self, flow: http.HTTPFlow) -> Refusal | None:
        """Inside a tunnel mitmproxy forwards an absolute-form target verbatim while deciding on
        the CONNECT host; an upstream must route by that target (RFC 9112 §3.2.2), so a target
        naming another host is domain fronting."""
        tunnel = self.runtime.tunnels.get(flow.client_conn.id)
        authority = flow.request.authority
        if tunnel is None or not authority:
            return None
        if _same_host(_authority_host(authority), tunnel.host):
            return None
        return Refusal("destination_denied", MISMATCH_RULE,
                       f"request target {authority!r} inside a tunnel to {tunnel.host}")

    @guarded
    async def client_disconnected(self, client) -> None:
        self._close.pop(client.id, None)
        relay = self._relays.pop(client.id, None)
        if relay is not None:  # the relay ended without tcp_end (e.g. the upstream never answered)
            await self._record(relay, client.peername)
