"""SSRF: the upstream address is checked after DNS resolution and the connection pinned to it.

mitmproxy would resolve the name itself inside `open_connection`, after every hook has run, so
a name that resolves to a public address for the check and to 169.254.169.254 for the connect
(DNS rebinding) would get through. Instead the request hook resolves, checks every address and
remembers them; `server_connect` connects to exactly a checked address and keeps the name as SNI
so certificate verification stays on the name.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict

from mitmproxy import http
from mitmproxy.proxy.server_hooks import ServerConnectionHookData

from clearwall.mitm import respond
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.decision import Refusal
from clearwall.policy.hosts import normalize_host, parse_ip
from clearwall.policy.ruleset import RuleSet
from clearwall.policy.ssrf import refusal_reason

log = logging.getLogger("clearwall")
SSRF_RULE = "ssrf"


class Resolver:
    """getaddrinfo on the event loop's executor, with a short positive cache (bounded)."""

    def __init__(self, ttl: float = 10.0, max_entries: int = 4096, clock=time.monotonic) -> None:
        self.ttl, self.max_entries, self.clock = ttl, max_entries, clock
        self._cache: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()

    async def resolve(self, host: str, overrides: dict[str, str]) -> list[str]:
        if (ip := parse_ip(host)) is not None:
            return [str(ip)]
        name = normalize_host(host)
        if name in overrides:
            return [overrides[name]]
        hit = self._cache.get(name)
        if hit and hit[0] > self.clock():
            return hit[1]
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
        addrs = list(dict.fromkeys(i[4][0] for i in infos))
        self._cache[name] = (self.clock() + self.ttl, addrs)
        self._cache.move_to_end(name)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return addrs


def check_addresses(rules: RuleSet, host: str, addrs: list[str], own: list[tuple[str, int]], port: int) -> Refusal | None:
    """Every address must be reachable: a name answering with one internal address is refused."""
    if not addrs:
        return Refusal("destination_denied", SSRF_RULE, f"{host} did not resolve to any address")
    s = rules.settings.ssrf
    for a in addrs:
        ip = parse_ip(a)
        why = refusal_reason(ip, deny_private=s.deny_private_ranges, allow=rules.ssrf_allow)
        if why:
            return Refusal("destination_denied", SSRF_RULE, f"{host} resolves to {why}")
        for own_host, own_port in own:
            if port == own_port and (ip.is_loopback or ip.is_unspecified or a == own_host
                                     or own_host in ("0.0.0.0", "::")):
                return Refusal("destination_denied", SSRF_RULE, f"{host}:{port} is this proxy itself (or its admin endpoint)")
    return None


class Upstream:
    name = "clearwall-upstream"

    def __init__(self, runtime: Runtime, resolver: Resolver | None = None) -> None:
        self.runtime = runtime
        self.resolver = resolver or Resolver()
        self._pinned: dict[str, tuple[str, int]] = {}  # server connection id -> (name, port)

    @guarded
    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        st = flow_state(flow)
        rules = st.rules or self.runtime.require_rules()
        host = flow.request.host
        try:
            addrs = await self.resolver.resolve(host, rules.settings.upstream.resolve)
        except (OSError, UnicodeError, ValueError) as e:
            return respond.refuse(flow, Refusal("destination_denied", SSRF_RULE, f"{host} cannot be resolved: {e}"))
        refusal = check_addresses(rules, host, addrs, self.runtime.own_addresses(), flow.request.port)
        if refusal is not None:
            return respond.refuse(flow, refusal)
        st.resolved_ip = addrs[0]

    @guarded
    async def server_connect(self, data: ServerConnectionHookData) -> None:
        if data.server.address is None:
            return
        host, port = data.server.address
        rules = self.runtime.require_rules()
        addrs = await self.resolver.resolve(host, rules.settings.upstream.resolve)
        refusal = check_addresses(rules, host, addrs, self.runtime.own_addresses(), port)
        if refusal is not None:
            log.warning("refused upstream connection: %s", refusal.message)
            data.server.error = f"clearwall: {refusal.message}"
            return
        if parse_ip(host) is None:
            if data.server.sni is None:
                data.server.sni = host  # certificate verification stays on the name
            self._pinned[data.server.id] = (host, port)
            data.server.address = (addrs[0], port)

    @guarded
    def server_connected(self, data: ServerConnectionHookData) -> None:
        # mitmproxy reuses an upstream connection only when its address equals the request's
        # (host, port); with the checked IP left in place every request would open a new one.
        # Connected, `address` is only bookkeeping (`peername` holds the IP actually reached);
        # mitmproxy refuses the assignment on an open connection, hence object.__setattr__.
        original = self._pinned.pop(data.server.id, None)
        if original is not None:
            object.__setattr__(data.server, "address", original)

    @guarded
    def server_connect_error(self, data: ServerConnectionHookData) -> None:
        self._pinned.pop(data.server.id, None)
