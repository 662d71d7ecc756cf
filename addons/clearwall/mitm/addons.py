"""The Clearwall addon chain, in the order mitmproxy must call it.

Order matters: the log gate refuses first when the log cannot be written; access decides who
may go where; upstream checks the resolved address; the body log records last, after every
other addon has decided and rewritten.
"""

from __future__ import annotations

from clearwall.mitm.access import Access
from clearwall.mitm.bodylog import BodyLog, LogGate
from clearwall.mitm.content import ContentFilters
from clearwall.mitm.core import Core
from clearwall.mitm.mcp import Mcp
from clearwall.mitm.streams import Streams
from clearwall.mitm.websocket import WebSockets
from clearwall.mitm.credentials import Credentials
from clearwall.mitm.passthrough import Passthrough
from clearwall.mitm.admin import Admin
from clearwall.mitm.metrics import Metrics
from clearwall.mitm.reload import Reload
from clearwall.mitm.ratelimit import RateLimits
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.upstream import Upstream
from clearwall.mitm.upstream_tls import UpstreamTls


def make_addons(runtime: Runtime | None = None) -> list[object]:
    runtime = runtime or Runtime()
    # One line per addon; keep the order (see the module docstring).
    return [
        Core(runtime),
        Reload(runtime),
        Admin(runtime),
        LogGate(runtime),
        Access(runtime),
        Passthrough(runtime),
        Upstream(runtime),
        RateLimits(runtime),  # before any body work: a refused request costs little
        Mcp(runtime),  # parses JSON-RPC and decides tools before the content filters scan
        ContentFilters(runtime),
        Credentials(runtime),  # injects after the filters scanned what the client sent
        UpstreamTls(runtime),
        Streams(runtime),  # after the Content-Length cap; decides streaming in responseheaders
        WebSockets(runtime),
        Metrics(runtime),
        BodyLog(runtime),
    ]
