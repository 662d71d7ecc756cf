"""Build the bucket store named by `settings.rate_limit_backend`.

`memory` (default): this process only. `redis://[:password@]host:port/db`, `rediss://…` or
`unix:///path.sock?db=0`: shared between replicas, with `rate_limit_on_backend_error`
(`local` | `deny` | `allow`) deciding what happens while Redis is unreachable.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from clearwall.ratelimit.backend import Backend
from clearwall.ratelimit.memory import MemoryBackend
from clearwall.ratelimit.redis_backend import RedisBackend, parse_on_error

REDIS_SCHEMES = ("redis", "rediss", "unix")


def parse_backend_setting(value: object) -> str:
    """`memory` or a Redis URL; raises ValueError naming the value otherwise."""
    if value == "memory":
        return "memory"
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in REDIS_SCHEMES and (parts.hostname or parts.path):
            return value
    raise ValueError(
        f"rate_limit_backend must be 'memory' or a redis:// URL such as redis://host:6379/0, not {value!r}"
    )


def make_backend(setting: object = "memory", *, on_error: object = "local", **options) -> Backend:
    """A backend for the setting; `options` go to the backend's constructor (timeouts, caps)."""
    setting = parse_backend_setting(setting)
    policy = parse_on_error(on_error)
    if setting == "memory":
        return MemoryBackend(**options)
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"rate_limit_backend {setting!r} needs the 'redis' Python package ({exc})") from None
    return RedisBackend(setting, on_error=policy, **options)
