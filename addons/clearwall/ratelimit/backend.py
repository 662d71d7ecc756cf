"""The contract between `RateLimiter` and a bucket store, and the all-or-nothing rule.

Several limits can match one request (a global per-client limit and a destination's own limit).
Semantics, identical in every backend:

1. Every bucket is evaluated first, nothing is consumed.
2. If any *enforced* bucket refuses, the request is refused and **no bucket is consumed** — a
   refused request must not drain the client's other budgets (otherwise a client hammering one
   tight destination limit would also exhaust its global limit and be locked out everywhere).
3. Otherwise the request goes ahead: every enforced bucket and every report-mode bucket that
   admits it consumes one token. A report-mode bucket that refuses is recorded as a would-be
   refusal and not consumed, exactly as it would behave once enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from clearwall.ratelimit.gcra import Rate, Verdict, evaluate, unconsumed


@dataclass(frozen=True, slots=True)
class BucketCheck:
    """One bucket to evaluate for one request: `key` is its storage key, `bucket_id` its spec's."""

    bucket_id: str
    key: str
    rate: Rate
    enforced: bool


@dataclass(frozen=True, slots=True)
class Acquired:
    """A store's answer: one verdict per check, in order, and which store gave them.

    `verdicts` is None when no store could decide; `allowed` then says what the configured
    backend-error policy wants (`deny`: False, `allow`: True) and `error` says why.
    """

    verdicts: list[Verdict] | None
    source: str
    allowed: bool = False
    error: str | None = None


class Backend(Protocol):
    """A bucket store. `acquire` applies the all-or-nothing rule atomically."""

    name: str

    async def acquire(self, checks: Sequence[BucketCheck]) -> Acquired:
        """Decide; may raise on an unexpected failure (the caller then refuses)."""
        ...

    def retain(self, bucket_ids: frozenset[str]) -> None:
        """Forget buckets whose spec is no longer in force (rule reload)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters for the admin endpoint's metrics."""
        ...

    async def aclose(self) -> None: ...


def decide(checks: Sequence[BucketCheck], tats: Sequence[float | None], now: float) -> tuple[list[Verdict], list[bool]]:
    """Apply the rule above: the verdicts, and for each check whether its new TAT is stored."""
    verdicts = [evaluate(c.rate, tat, now) for c, tat in zip(checks, tats)]
    go = all(v.allowed for c, v in zip(checks, verdicts) if c.enforced)
    if go:
        return verdicts, [v.allowed for v in verdicts]
    # Buckets that would have admitted the request report their untouched state.
    return [unconsumed(c.rate, v) if v.allowed else v for c, v in zip(checks, verdicts)], [False] * len(checks)
