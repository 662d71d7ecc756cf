"""Who may reach which destination: client identification and the destination decision.

On CONNECT the client is identified and the host decided before any TLS handshake; inside the
tunnel every request is decided again (method, path) with the identity and rules the CONNECT
established, and its Host header and SNI must name the host the CONNECT named.
"""

from __future__ import annotations

import functools
import logging

from mitmproxy import connection, http
from mitmproxy.net.http import url

from clearwall.mitm import respond
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import Tunnel, flow_state
from clearwall.policy.clients import challenge, identify
from clearwall.policy.decision import Decision, Refusal
from clearwall.policy.engine import Target, decide
from clearwall.policy.hosts import normalize_host

log = logging.getLogger("clearwall")
MISMATCH_RULE = "host-mismatch"


@functools.lru_cache(maxsize=4096)
def _authority_host(header: str) -> str:
    """The host of a Host header (cached: clients repeat the same few on every request)."""
    try:
        return url.parse_authority(header, check=False)[0]
    except ValueError:
        return header


def _same_host(a: str | None, b: str) -> bool:
    try:
        return a is not None and normalize_host(a) == normalize_host(b)
    except ValueError:
        return False


def _apply(flow: http.HTTPFlow, decision: Decision) -> None:
    st = flow_state(flow)
    st.decision = decision
    st.would_block.extend(decision.would_block)
    if decision.refusal is not None:
        respond.refuse(flow, decision.refusal)


class Access:
    name = "clearwall-access"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @guarded
    def http_connect(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        rules = self.runtime.require_rules()
        st = flow_state(flow)
        st.rules = rules
        st.identity = identify(rules, flow.client_conn.peername[0], flow.request.headers.get("proxy-authorization"))
        if st.identity.refusal is not None:
            return respond.refuse(flow, st.identity.refusal)
        target = Target(flow.request.host, flow.request.port, "https", st.identity.client)
        decision = decide(rules, target)
        refusal = challenge(rules, decision.refusal, st.identity, "proxy-authorization" in flow.request.headers)
        if refusal is not decision.refusal:
            decision = Decision(refusal, decision.destination, decision.would_block, decision.trace)
        _apply(flow, decision)
        if decision.allowed:
            self.runtime.tunnels[flow.client_conn.id] = Tunnel(
                flow.request.host, flow.request.port, st.identity, rules,
                flow.request.headers.get("proxy-authorization"))

    @guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        req = flow.request
        tunnel = self.runtime.tunnels.get(flow.client_conn.id)
        if tunnel is not None:
            # Each request is decided by the rules in force now, not those of the CONNECT: a
            # reload that removes a destination or a client must reach open keep-alive tunnels.
            st.rules, st.connect_host = self.runtime.require_rules(), tunnel.host
            st.identity = tunnel.identity if st.rules is tunnel.rules else identify(
                st.rules, flow.client_conn.peername[0], tunnel.proxy_authorization)
            refusal = st.identity.refusal or self._tunnel_mismatch(flow, tunnel)
        else:
            st.rules = self.runtime.require_rules()
            st.identity = identify(st.rules, flow.client_conn.peername[0], req.headers.get("proxy-authorization"))
            refusal = st.identity.refusal or self._host_mismatch(req, req.host)
        sent_credentials = req.headers.pop("proxy-authorization", None) is not None  # never forwarded
        if refusal is not None:
            return respond.refuse(flow, refusal)
        target = Target(req.host, req.port, req.scheme, st.identity.client, req.method, req.path,
                        req.headers.get("content-type"), _has_body(req))
        decision = decide(st.rules, target)
        if tunnel is None:  # plain-HTTP proxy requests carry their own credentials
            refusal = challenge(st.rules, decision.refusal, st.identity, sent_credentials)
            if refusal is not decision.refusal:
                decision = Decision(refusal, decision.destination, decision.would_block, decision.trace)
        _apply(flow, decision)

    @staticmethod
    def _host_mismatch(req: http.Request, host: str) -> Refusal | None:
        header = req.host_header
        if header is None:
            return None
        if _same_host(_authority_host(header), host):
            return None
        return Refusal("destination_denied", MISMATCH_RULE, f"Host header {header!r} does not match the destination {host}")

    def _tunnel_mismatch(self, flow: http.HTTPFlow, tunnel: Tunnel) -> Refusal | None:
        sni = flow.client_conn.sni
        if flow.client_conn.tls and sni and not _same_host(sni, tunnel.host):
            return Refusal("destination_denied", MISMATCH_RULE, f"TLS SNI {sni!r} does not match CONNECT {tunnel.host}")
        if not _same_host(flow.request.host, tunnel.host) or flow.request.port != tunnel.port:
            return Refusal("destination_denied", MISMATCH_RULE,
                           f"request for {flow.request.host} inside a tunnel to {tunnel.host}")
        return self._host_mismatch(flow.request, tunnel.host)

    @guarded
    def client_disconnected(self, client: connection.Client) -> None:
        self.runtime.tunnels.pop(client.id, None)


def _has_body(req: http.Request) -> bool:
    return bool(req.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in req.headers)
