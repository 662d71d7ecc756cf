"""Which rate limits apply to a request (SPEC §3): pure, compiled once per rule set.

A request is counted against every `rate_limits` entry whose optional `clients` and
`destinations` lists admit it, plus the own `rate_limit` of the destination that allowed it
(that limit is named after the destination; rule names are unique across sections, so the names
never collide). Each limit's effective mode is its own `mode`, else `settings.mode`; a
destination's limit follows the destination's effective mode.

The bucket keys of a request come from here too, so the adapter only passes what it observed.
Values that are not rule names are written in parentheses: rule names cannot contain them, so an
unidentified client never shares a bucket with a client rule that happens to be called
`anonymous`, and a request no destination allowed (report mode) never shares one with a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from clearwall.policy.hosts import parse_ip
from clearwall.policy.ruleset import RuleSet
from clearwall.ratelimit.spec import LimitSpec

ANONYMOUS = "(anonymous)"


@dataclass(frozen=True)
class _Scoped:
    """A global limit with its optional client and destination scoping."""

    spec: LimitSpec
    clients: frozenset[str] | None
    destinations: frozenset[str] | None

    def applies(self, client: str | None, destination: str | None) -> bool:
        return (self.clients is None or client in self.clients) and (
            self.destinations is None or destination in self.destinations
        )


def _scoped(rules: RuleSet) -> list[_Scoped]:
    mode = rules.settings.mode
    return [
        _Scoped(
            LimitSpec(r.name, r.key, r.requests, r.per, r.burst, r.mode or mode),
            frozenset(r.clients) if r.clients is not None else None,
            frozenset(r.destinations) if r.destinations is not None else None,
        )
        for r in rules.rate_limits
    ]


def _destination_specs(rules: RuleSet) -> dict[str, LimitSpec]:
    out: dict[str, LimitSpec] = {}
    for d in rules.destinations:
        rl = d.spec.rate_limit if d.spec is not None else None
        if rl is not None:
            out[d.name] = LimitSpec(d.name, rl.key, rl.requests, rl.per, rl.burst, d.mode)
    return out


class LimitIndex:
    """The rate limits of one rule set, and which of them match a (client, destination) pair.

    Matching depends only on rule names (the client's and the allowing destination's), of which
    a rule set has few, so answers are cached; `max_cached` bounds the cache all the same.
    """

    def __init__(self, rules: RuleSet, max_cached: int = 4096) -> None:
        if max_cached < 0:
            raise ValueError(f"max_cached must be zero or more, not {max_cached!r}")
        self.version = rules.fingerprint  # substituted values count (a ${VAR} limit)
        self._scoped = tuple(_scoped(rules))
        self._own = _destination_specs(rules)
        # Every limit of the rule set: `rate_limits` entries in file order, then destinations'.
        self.specs: tuple[LimitSpec, ...] = tuple(s.spec for s in self._scoped) + tuple(self._own.values())
        self._max_cached = max_cached
        self._cache: dict[tuple[str | None, str | None], tuple[LimitSpec, ...]] = {}

    def __len__(self) -> int:
        return len(self.specs)

    def matching(self, client: str | None, destination: str | None) -> tuple[LimitSpec, ...]:
        """Limits a request by `client` (None: unidentified) allowed by `destination` counts against."""
        key = (client, destination)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        found = tuple(s.spec for s in self._scoped if s.applies(client, destination))
        own = self._own.get(destination) if destination is not None else None
        if own is not None:
            found += (own,)
        if len(self._cache) < self._max_cached:
            self._cache[key] = found
        return found


def client_key(client: str | None) -> str:
    """The `client` bucket key: the client rule's name, or one shared key for unidentified clients."""
    return client if client is not None else ANONYMOUS


def destination_key(destination: str | None, host: str) -> str:
    """The `destination` bucket key: the allowing rule's name, else (report mode) the host asked for."""
    return destination if destination is not None else f"({host.lower().rstrip('.')})"


@lru_cache(maxsize=4096)  # parsing an address costs more than the rest of a decision; peers repeat
def source_key(peer_ip: str) -> str:
    """The `source_ip` bucket key: the peer address, IPv4-mapped IPv6 written as IPv4."""
    ip = parse_ip(peer_ip)
    if ip is None:
        return peer_ip
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
