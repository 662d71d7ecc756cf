"""Generic Cell Rate Algorithm: the token bucket of SPEC §3 stored as one number per key.

A limit of `requests` per `per` seconds with `burst` extra tokens is a bucket of
`capacity = requests + burst` tokens refilled at one token every `interval = per / requests`
seconds, starting full. GCRA stores only the *theoretical arrival time* (TAT): the instant at
which the bucket would be full again. The bucket is full whenever `tat <= now`, and it holds
`(now + capacity * interval - tat) / interval` tokens otherwise. A request is admitted when taking
one token leaves that number >= 0, i.e. when `max(tat, now) + interval - now <= capacity *
interval`; admitting it moves TAT forward by one interval.

Storing one float instead of (tokens, last_refill) means a key whose TAT is in the past carries no
information and can be forgotten (memory bound), and the Redis script can do the same arithmetic
on the server's clock with a single GET/SET. The Lua script in `redis_backend.py` mirrors
`evaluate` line for line; change both together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Float slack on the admission test and on token counts. 7 per 13 s has an interval of
# 1.857142…s; after seven requests and 13 s of waiting the exact arithmetic says "full" but
# floating point may leave the TAT a few ulps in the future. One microsecond is far below any
# clock resolution a client could exploit and far above accumulated rounding error.
EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Rate:
    """A validated bucket shape. Build it with `Rate.of` (raises ValueError on bad input)."""

    requests: int
    per: float
    burst: int

    @classmethod
    def of(cls, requests: int, per: float, burst: int = 0) -> Rate:
        return cls(*parse_rate(requests, per, burst))

    @property
    def capacity(self) -> int:
        return self.requests + self.burst

    @property
    def interval(self) -> float:
        """Seconds to refill one token."""
        return self.per / self.requests

    @property
    def tolerance(self) -> float:
        """How far TAT may run ahead of now: a full bucket's worth of intervals."""
        return self.capacity * self.interval


def parse_rate(requests: object, per: object, burst: object) -> tuple[int, float, int]:
    """Validate a rate limit's numbers; raise ValueError naming the bad one."""
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise ValueError(f"rate limit 'requests' must be a whole number of at least 1, not {requests!r}")
    if isinstance(per, bool) or not isinstance(per, (int, float)) or not math.isfinite(per) or per <= 0:
        raise ValueError(f"rate limit 'per' must be a positive number of seconds, not {per!r}")
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
        raise ValueError(f"rate limit 'burst' must be a whole number of at least 0, not {burst!r}")
    return requests, float(per), burst


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of one bucket for one request.

    `remaining`: whole tokens left after this request (if admitted) or now (if refused).
    `retry_after`: seconds until the next request would be admitted (0 while tokens remain).
    `reset`: seconds until the bucket is full again.
    `tat`: the TAT to store if this request is admitted (the current TAT if refused).
    """

    allowed: bool
    remaining: int
    retry_after: float
    reset: float
    tat: float


def evaluate(rate: Rate, tat: float | None, now: float) -> Verdict:
    """Decide one request against a bucket whose stored TAT is `tat` (None: never seen = full).

    Pure: the caller stores `Verdict.tat` only if it decides to consume.
    """
    interval, tolerance = rate.interval, rate.tolerance
    current = now if tat is None or tat < now else tat
    new_tat = current + interval
    if new_tat - now <= tolerance + EPSILON:
        remaining = max(math.floor((tolerance - (new_tat - now)) / interval + EPSILON), 0)
        # With the last token taken, the next request waits for the TAT to fall back by one.
        wait = max(new_tat - now - tolerance + interval, 0.0) if remaining == 0 else 0.0
        return Verdict(True, remaining, wait, max(new_tat - now, 0.0), new_tat)
    # Refused: the token arrives when TAT has fallen to `now + tolerance - interval`.
    retry_after = max(new_tat - now - tolerance, 0.0)
    return Verdict(False, 0, retry_after, max(current - now, 0.0), current)


def unconsumed(rate: Rate, verdict: Verdict) -> Verdict:
    """The state an admitting verdict describes if its token is, after all, not taken."""
    if not verdict.allowed:
        return verdict
    tat = verdict.tat - rate.interval
    return Verdict(True, min(verdict.remaining + 1, rate.capacity), 0.0, max(verdict.reset - rate.interval, 0.0), tat)


def idle(tat: float, now: float) -> bool:
    """A bucket whose TAT is not in the future is full: forgetting it changes nothing."""
    return tat <= now
