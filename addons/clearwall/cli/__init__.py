"""The `clearwall` command: one sub-command module per room (run, ca, rules, logs)."""

from __future__ import annotations

import argparse
import sys

from clearwall import __version__
from clearwall.errors import ClearwallError


def _version() -> str:
    try:
        from mitmproxy.version import VERSION as mitm
    except Exception:  # pragma: no cover - mitmproxy is a hard dependency
        mitm = "unknown"
    return f"clearwall {__version__} (mitmproxy {mitm}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    from clearwall.cli import ca, logs, rules, run

    parser = argparse.ArgumentParser(
        prog="clearwall",
        description="TLS-intercepting egress firewall for MCP servers and AI agents.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, ca, rules, logs):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:  # `clearwall run ... -- MITMPROXY_ARGS`
        i = argv.index("--")
        argv, passthrough = argv[:i], argv[i + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    args.passthrough = passthrough
    try:
        return int(args.func(args) or 0)
    except ClearwallError as e:
        print(f"clearwall: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
