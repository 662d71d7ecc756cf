"""The Clearwall addon chain, in the order mitmproxy must call it.

Order matters: the log gate refuses first when the log cannot be written; access decides who
may go where; upstream checks the resolved address; the body log records last, after every
other addon has decided and rewritten.
"""

from __future__ import annotations

import inspect

from clearwall.mitm.access import Access
from clearwall.mitm.bodylog import BodyLog, LogGate
from clearwall.mitm.content import ContentFilters
from clearwall.mitm.core import Core
from clearwall.mitm.guard import hook_names
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


def _dispatcher(name: str, handlers: list):
    """One hook that calls each child's handler in chain order (awaiting the async ones)."""
    if any(inspect.iscoroutinefunction(h) for h in handlers):
        async def hook(*args):
            for h in handlers:
                result = h(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
    else:
        def hook(*args):
            for h in handlers:
                h(*args)
    hook.__name__ = name
    return hook


class ClearwallChain:
    """The chain as one mitmproxy addon that dispatches each event to the children handling it.

    mitmproxy walks every addon in its list, and every sub-addon of each (a `getattr` per object
    per event), for every event of every flow. This parent exposes exactly the hooks its children
    implement and calls only the children that implement each one, in chain order: most of
    Clearwall's per-request overhead in mitmproxy's dispatch is gone. It deliberately has no
    `addons` attribute, so mitmproxy does not walk the children as well. Sharing one `safecall`
    is safe because every child flow hook is wrapped by the fail-closed guard (a test checks it).
    """

    name = "clearwall"

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.children = make_addons(runtime)
        names = sorted({n for c in self.children for n in hook_names(c)})
        for n in names:
            handlers = [getattr(c, n) for c in self.children if n in hook_names(c)]
            setattr(self, n, _dispatcher(n, handlers))
