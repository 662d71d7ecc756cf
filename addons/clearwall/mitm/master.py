"""Running mitmproxy in-process with the Clearwall addon chain (not a shell-out to mitmdump)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from mitmproxy import exceptions, options
from mitmproxy.tools import cmdline
from mitmproxy.tools.dump import DumpMaster
from mitmproxy.tools.main import process_options

from clearwall.errors import StartupError
from clearwall.mitm.addons import ClearwallChain
from clearwall.mitm.core import safe_mitm_options
from clearwall.mitm.runtime import Runtime

log = logging.getLogger("clearwall")
# mitmproxy's default addons that Clearwall needs: the proxy itself, TLS, layer selection,
# blocking of public client addresses, h2c-upgrade refusal, upstream-proxy credentials, and the
# dump master's start-up checks. Every other default addon is dispatched on every event of every
# flow for nothing (about 40 % of the proxy's CPU per request) or would rewrite traffic after
# Clearwall decided (map_remote, modify_body, replay, ...; their options are refused anyway).
KEEP_DEFAULTS = frozenset({"core", "block", "disableh2c", "proxyserver", "nextlayer", "tlsconfig",
                           "upstreamauth", "keepserving", "errorcheck", "clearwall"})


def _drop_unused_defaults(master: DumpMaster) -> None:
    """Before the proxy runs. (`AddonManager.remove` would call each addon's `done`, which some
    defaults define as async; these addons never started, so leaving the chain is enough. Their
    options stay registered, which keeps `-- MITMPROXY_ARGS` parsing and the refusals working.)"""
    keep = []
    for addon in master.addons.chain:
        name = getattr(addon, "name", type(addon).__name__.lower())
        if name in KEEP_DEFAULTS:
            keep.append(addon)
        else:
            master.addons.lookup.pop(name, None)
    master.addons.chain = keep


async def serve(*, rules: str, listen: tuple[str, int], ca_dir: Path, log_dir: Path,
                mitm_args: Sequence[str] = (), runtime: Runtime | None = None) -> int:
    """Run the proxy until SIGTERM/SIGINT; returns the exit code."""
    runtime = runtime or Runtime()
    runtime.ca_dir = ca_dir.resolve()
    opts = options.Options()
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    master.addons.add(ClearwallChain(runtime))
    try:
        if mitm_args:
            parser = cmdline.mitmdump(opts)
            try:
                args = parser.parse_args(list(mitm_args))
            except SystemExit:
                raise StartupError(f"mitmproxy arguments not understood: {' '.join(mitm_args)}") from None
            opts.set(*args.setoptions)
            process_options(parser, opts, args)
        opts.update(
            confdir=str(ca_dir),
            listen_host=listen[0],
            listen_port=listen[1],
            clearwall_log_dir=str(log_dir),
            clearwall_rules=rules,
            **safe_mitm_options(),
        )
    except exceptions.OptionsError as e:
        raise StartupError(str(e)) from None
    _drop_unused_defaults(master)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, master.shutdown)
    try:
        await master.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0
