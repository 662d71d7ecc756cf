"""Rate limits (SPEC §3-§4): GCRA buckets in memory or shared through Redis.

Usage from an adapter:

    limiter = RateLimiter(specs, make_backend(settings.rate_limit_backend, on_error=...))
    decision = await limiter.check(matching, client=c, destination=d, source_ip=ip)
    if not decision.allowed: answer 429 with decision.headers() (or 502 if decision.error)
    limiter = limiter.rebuild(new_specs)          # on rule reload; unchanged limits keep state

Pure: nothing here imports mitmproxy.
"""

from clearwall.ratelimit.backend import Acquired, Backend, BucketCheck
from clearwall.ratelimit.config import make_backend, parse_backend_setting
from clearwall.ratelimit.gcra import Rate, Verdict, evaluate
from clearwall.ratelimit.limiter import LimitState, RateDecision, RateLimiter
from clearwall.ratelimit.memory import MemoryBackend
from clearwall.ratelimit.redis_backend import RedisBackend, parse_on_error
from clearwall.ratelimit.spec import KEY_KINDS, LimitSpec, parse_key_kind, parse_mode

__all__ = [
    "Acquired", "Backend", "BucketCheck", "KEY_KINDS", "LimitSpec", "LimitState", "MemoryBackend",
    "Rate", "RateDecision", "RateLimiter", "RedisBackend", "Verdict", "evaluate", "make_backend",
    "parse_backend_setting", "parse_key_kind", "parse_mode", "parse_on_error",
]
