"""`RateLimiter`: decides one request against every rate limit that matches it.

The caller (the mitmproxy adapter) finds which specs match a request — the global `rate_limits`
and the matched destination's own `rate_limit` — and awaits `check`. The decision says whether
to forward, which limit refused, and carries the 429 headers. Semantics of several limits on
one request: see `backend.py` (all evaluated, none consumed unless every enforced one admits).

Fail closed: if the backend raises, `check` returns a refusal with `error` set (the adapter
answers 502 `inspection_error`); it never lets the request through unrecorded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from clearwall.ratelimit.backend import Backend, BucketCheck
from clearwall.ratelimit.gcra import Verdict
from clearwall.ratelimit.headers import rate_limit_headers
from clearwall.ratelimit.spec import LimitSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LimitState:
    """One matching limit's bucket after this decision."""

    spec: LimitSpec
    allowed: bool
    remaining: int
    retry_after: float
    reset: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of `RateLimiter.check`.

    `allowed`: forward the request. `refused_by`: the enforced limit that refused (the one with the
    longest wait when several did). `retry_after`: seconds to wait (0 when allowed).
    `would_block`: report-mode limits that would have refused (log `would_block`, count them).
    `states`: every matching limit, in the order given. `error`: set when no store could decide
    (store failure, or Redis unreachable under the `deny`/`allow` policy); the request is then
    refused unless the operator chose `rate_limit_on_backend_error: allow`.
    `source`: which store decided ("memory", "redis", "local", "allow", "deny", "error", "none").
    """

    allowed: bool
    refused_by: LimitSpec | None = None
    retry_after: float = 0.0
    states: tuple[LimitState, ...] = ()
    would_block: tuple[LimitSpec, ...] = ()
    error: str | None = None
    source: str = "none"

    @property
    def kind(self) -> str | None:
        """SPEC §4 refusal kind: `rate_limited` (429), `inspection_error` (502), None if allowed."""
        if self.allowed:
            return None
        return "rate_limited" if self.refused_by is not None else "inspection_error"

    def message(self) -> str:
        """One sentence for the refusal body and the log."""
        if self.refused_by is not None:
            s = self.refused_by
            return (
                f"Rate limit {s.name!r} allows {s.requests} requests per {s.per:g} s per {s.key}"
                f" (burst {s.burst}); retry in {max(1, math.ceil(self.retry_after - 1e-6))} s."
            )
        if self.error is not None:
            return f"The rate limit could not be checked ({self.error})."
        return "Within rate limits."

    def headers(self) -> dict[str, str]:
        """`Retry-After` (refusals only), `RateLimit-Policy`, `RateLimit` of the enforced limits.

        Refused by a limit: the refusing limit first, then the others. Allowed: every enforced
        limit, so a response may carry them too. Report-mode limits are never advertised.
        """
        if self.error is not None:
            return {}
        enforced = [s for s in self.states if s.spec.enforced]
        if self.refused_by is not None:
            enforced.sort(key=lambda s: s.spec != self.refused_by)
        return rate_limit_headers(
            ((s.spec, s.remaining, s.retry_after, s.reset) for s in enforced),
            None if self.allowed else self.retry_after,
        )


ALLOWED_NO_LIMITS = RateDecision(allowed=True)


class RateLimiter:
    """Rate limits in force plus the bucket store they count in."""

    def __init__(self, specs: Sequence[LimitSpec], backend: Backend) -> None:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rate limit name {duplicates[0]!r} is used more than once")
        self.specs: tuple[LimitSpec, ...] = tuple(specs)
        self.backend = backend

    def rebuild(self, new_specs: Sequence[LimitSpec]) -> RateLimiter:
        """A limiter for reloaded rules sharing this one's store.

        Buckets of specs with an unchanged identity (name, key, numbers) keep their state; the
        buckets of removed or changed specs are dropped. Validates before touching the store, so
        an invalid rule set leaves the running limiter intact.
        """
        limiter = RateLimiter(new_specs, self.backend)
        self.backend.retain(frozenset(s.bucket_id for s in limiter.specs))
        return limiter

    async def check(
        self,
        specs_that_match: Sequence[LimitSpec],
        *,
        client: str,
        destination: str,
        source_ip: str,
    ) -> RateDecision:
        if not specs_that_match:
            return ALLOWED_NO_LIMITS
        checks = [
            BucketCheck(
                s.bucket_id,
                s.bucket_key(client=client, destination=destination, source_ip=source_ip),
                s.rate,
                s.enforced,
            )
            for s in specs_that_match
        ]
        try:
            got = await self.backend.acquire(checks)
        except Exception as exc:  # fail closed: any store failure refuses the request
            log.error("rate-limit decision failed (%s): %s", type(exc).__name__, exc)
            return RateDecision(False, error=f"rate-limit store failed: {type(exc).__name__}", source="error")
        if got.verdicts is None:  # store unreachable: the backend-error policy decided
            return RateDecision(got.allowed, error=got.error or "rate-limit store unavailable", source=got.source)
        return decision_from(specs_that_match, got.verdicts, got.source)


def decision_from(specs: Sequence[LimitSpec], verdicts: Sequence[Verdict], source: str) -> RateDecision:
    states = tuple(
        LimitState(s, v.allowed, v.remaining, v.retry_after, v.reset) for s, v in zip(specs, verdicts)
    )
    refusing = [st for st in states if st.spec.enforced and not st.allowed]
    would_block = tuple(st.spec for st in states if not st.spec.enforced and not st.allowed)
    if not refusing:
        return RateDecision(True, states=states, would_block=would_block, source=source)
    worst = max(refusing, key=lambda st: st.retry_after)
    return RateDecision(
        False, worst.spec, worst.retry_after, states=states, would_block=would_block, source=source
    )
