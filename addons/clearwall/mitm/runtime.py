"""What the Clearwall addons share in one proxy process: the rules in force, tunnels, the log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clearwall.mitm.state import Tunnel
from clearwall.policy.ruleset import RuleSet


@dataclass
class Runtime:
    rules: RuleSet | None = None
    tunnels: dict[str, Tunnel] = field(default_factory=dict)  # client connection id -> CONNECT
    writer: Any = None  # clearwall.audit.writer.LogWriter once running
    listen: tuple[str, int] | None = None  # our own address: never a destination (no loops)
    admin: tuple[str, int] | None = None  # admin endpoint address (None: off)
    ca_dir: Path | None = None  # a CA directory `clearwall run` created or verified itself
    limiter: Any = None  # clearwall.ratelimit.RateLimiter for the rules in force
    metrics: Any = None  # clearwall.mitm.metrics registry holder, when metrics are on
    last_reload_error: str | None = None  # shown under /rules; the rules in force stay

    def own_addresses(self) -> list[tuple[str, int]]:
        """Clearwall's own listeners (proxy and admin): never destinations, so no loops and no
        way for a client to reach the admin endpoint through the proxy."""
        return [a for a in (self.listen, self.admin) if a is not None]

    def require_rules(self) -> RuleSet:
        if self.rules is None:
            raise RuntimeError("no rules are loaded")
        return self.rules
