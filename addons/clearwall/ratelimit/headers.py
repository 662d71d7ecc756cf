"""`Retry-After`, `RateLimit-Policy` and `RateLimit` as in draft-ietf-httpapi-ratelimit-headers.

Both RateLimit fields are Structured Field Lists (RFC 9651) of Strings with parameters:

    RateLimit-Policy: "per-client";q=600;w=60
    RateLimit: "per-client";r=0;t=12

- `q` (quota) is the limit's `requests`, `w` (window) its `per` in whole seconds. The burst is not
  part of the advertised quota: it is slack, not a promise. A `per` that is not a whole number of
  seconds is advertised as the rate over the next whole second count (10 per 0.5 s → q=20;w=1).
- `r` is the whole tokens left. `t` is when it is worth trying again: with r=0, the seconds until
  the next token (at least 1; the same value as `Retry-After` on a refusal); with r>0, the
  seconds until the bucket is full again (0 when it is full).
- Delay-seconds are rounded up (a client that waits the advertised time must succeed) and
  `Retry-After` is at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from clearwall.ratelimit.spec import LimitSpec


def sf_string(text: str) -> str:
    """An sf-string: printable ASCII only, `\\` and `"` escaped; anything else becomes `?`."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("?")
    return '"' + "".join(out) + '"'


def delay_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, never negative. Sub-microsecond float noise is not a second."""
    return max(0, math.ceil(seconds - 1e-6))


def quota_window(spec: LimitSpec) -> tuple[int, int]:
    window = max(1, math.ceil(spec.per - 1e-9))
    if window == spec.per:
        return spec.requests, window
    return max(1, math.floor(spec.requests * window / spec.per + 1e-9)), window


def policy_item(spec: LimitSpec) -> str:
    quota, window = quota_window(spec)
    return f"{sf_string(spec.name)};q={quota};w={window}"


def state_item(spec: LimitSpec, remaining: int, retry_after: float, reset: float) -> str:
    if remaining == 0:
        return f"{sf_string(spec.name)};r=0;t={max(1, delay_seconds(retry_after))}"
    return f"{sf_string(spec.name)};r={remaining};t={delay_seconds(reset)}"


def rate_limit_headers(
    states: Iterable[tuple[LimitSpec, int, float, float]], retry_after: float | None
) -> dict[str, str]:
    """Headers for `(spec, remaining, retry_after, reset)` states; `Retry-After` when refused."""
    states = list(states)
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, delay_seconds(retry_after)))
    if states:
        headers["RateLimit-Policy"] = ", ".join(policy_item(s[0]) for s in states)
        headers["RateLimit"] = ", ".join(state_item(*s) for s in states)
    return headers
