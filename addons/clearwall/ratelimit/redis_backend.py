"""Buckets shared between proxy replicas in one Redis server.

One Lua script checks and consumes every matching limit of a request in a single round trip,
atomically (Redis runs scripts one at a time), with the all-or-nothing rule of `backend.py`.
It reads the clock with Redis `TIME`, so replicas whose clocks disagree still share one
timeline. The script only decides admission and stores TATs; it returns the server time and the
TATs it read, and Python recomputes the reported numbers with `gcra.evaluate` — the same IEEE
double arithmetic on the same inputs, so both sides agree and the formula lives in one place
plus the one admission test below.

When Redis is unreachable or slow (every call is bounded by `timeout`), the
`rate_limit_on_backend_error` policy applies: `local` (default) decides with this replica's own
memory buckets, `deny` refuses, `allow` lets requests through unlimited. A warning is logged once
per outage and `backend_errors` counts failed Redis calls (a pipeline counts once). While Redis is down no request waits on it:
one background task probes with PING, backing off from `probe_min` to `probe_max` seconds, and
requests go back to Redis once it answers. Concurrent requests share pipelines (`redis_batch.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence

from clearwall.ratelimit.backend import Acquired, BucketCheck, decide
from clearwall.ratelimit.gcra import EPSILON
from clearwall.ratelimit.memory import MemoryBackend
from clearwall.ratelimit.redis_batch import ScriptBatcher, StoreFailure

log = logging.getLogger(__name__)

ON_ERROR_POLICIES = ("local", "deny", "allow")

# KEYS: bucket keys. ARGV: (interval, tolerance, enforced) per key, then epsilon.
# Mirrors gcra.evaluate's admission test and backend.decide's all-or-nothing rule.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local eps = tonumber(ARGV[3 * n + 1])
local read, admit, go = {}, {}, true
for i = 1, n do
  local raw = redis.call('GET', KEYS[i])
  read[i] = raw or ''
  local tat = tonumber(raw)
  local current = now
  if tat and tat > now then current = tat end
  local new_tat = current + tonumber(ARGV[3 * i - 2])
  if new_tat - now <= tonumber(ARGV[3 * i - 1]) + eps then
    admit[i] = new_tat
  elseif ARGV[3 * i] == '1' then
    go = false
  end
end
if go then
  for i = 1, n do
    if admit[i] then
      local ttl = math.ceil((admit[i] - now) * 1000) + 1
      redis.call('SET', KEYS[i], string.format('%.17g', admit[i]), 'PX', ttl)
    end
  end
end
local out = {string.format('%.17g', now)}
for i = 1, n do out[i + 1] = read[i] end
return out
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def parse_on_error(value: object) -> str:
    if value not in ON_ERROR_POLICIES:
        raise ValueError(f"rate_limit_on_backend_error must be local, deny or allow, not {value!r}")
    return value  # type: ignore[return-value]


def make_client(url: str, timeout: float, max_connections: int):
    """An asyncio Redis client that fails fast: no retries, short connect/read timeouts."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis(connection_pool=pool)


class RedisBackend:
    """Shared buckets in Redis with a configurable policy for when Redis is unreachable."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        on_error: str = "local",
        timeout: float = 0.25,
        probe_min: float = 0.5,
        probe_max: float = 30.0,
        prefix: str = "clearwall:rl:",
        max_connections: int = 4,
        max_batch: int = 256,
        fallback: MemoryBackend | None = None,
        client=None,
    ) -> None:
        self.on_error = parse_on_error(on_error)
        if not 0 < timeout <= 10:
            raise ValueError(f"rate-limit Redis timeout must be between 0 and 10 seconds, not {timeout!r}")
        if not 0 < probe_min <= probe_max:
            raise ValueError("rate-limit Redis probe_min must be positive and at most probe_max")
        self.url = url
        self._timeout = timeout
        self._probe_min, self._probe_max = probe_min, probe_max
        self._prefix = prefix
        self._client = client if client is not None else make_client(url, timeout, max_connections)
        self._batcher = ScriptBatcher(
            self._client, SCRIPT, SCRIPT_SHA, timeout=timeout, max_batch=max_batch, on_failure=self._mark_down
        )
        self.fallback = fallback if fallback is not None else MemoryBackend()
        self.healthy = True
        self.backend_errors = 0
        self.fallback_decisions = 0
        self.slow_calls = 0
        self._probe_task: asyncio.Task | None = None

    async def acquire(self, checks: Sequence[BucketCheck]) -> Acquired:
        if self.healthy:
            try:
                now, tats = await asyncio.wait_for(self._round_trip(checks), self._timeout)
            except StoreFailure:
                pass  # the batcher has reported it: outage policy for this request
            except TimeoutError:
                # Queued behind a busy pipeline: this request alone gets the outage policy.
                # A Redis that stopped answering is detected by the pipeline's own timeout.
                self.slow_calls += 1
            except Exception as exc:  # any other failure to get an answer: outage policy
                self._mark_down(exc)
            else:
                verdicts, _ = decide(checks, tats, now)
                return Acquired(verdicts, self.name)
        return self._degraded(checks)

    def retain(self, bucket_ids: frozenset[str]) -> None:
        # Redis keys of removed specs are never read again and expire once their bucket is full.
        self.fallback.retain(bucket_ids)

    def stats(self) -> dict[str, int]:
        """Counters for metrics: `healthy` (1/0), failed Redis calls, decisions made without it."""
        return {
            "healthy": int(self.healthy),
            "backend_errors": self.backend_errors,
            "fallback_decisions": self.fallback_decisions,
            "slow_calls": self.slow_calls,
            "local_keys": len(self.fallback),
        }

    async def ping(self) -> bool:
        """True when Redis answers within the timeout (for readiness reporting)."""
        try:
            return bool(await asyncio.wait_for(self._client.ping(), self._timeout))
        except Exception:
            return False

    async def aclose(self) -> None:
        if self._probe_task is not None:
            self._probe_task.cancel()
            try:
                await self._probe_task
            except asyncio.CancelledError:
                pass
            self._probe_task = None
        await self._batcher.aclose()
        await self._client.aclose()
        await self.fallback.aclose()

    async def _round_trip(self, checks: Sequence[BucketCheck]) -> tuple[float, list[float | None]]:
        keys = [self._prefix + c.key for c in checks]
        args: list[str] = []
        for c in checks:
            args += (repr(c.rate.interval), repr(c.rate.tolerance), "1" if c.enforced else "0")
        args.append(repr(EPSILON))
        raw = await self._batcher.call(keys, args)
        if len(raw) != len(checks) + 1:
            raise ValueError(f"rate-limit script answered {len(raw)} values for {len(checks)} keys")
        return float(raw[0]), [float(v) if v else None for v in raw[1:]]

    def _degraded(self, checks: Sequence[BucketCheck]) -> Acquired:
        self.fallback_decisions += 1
        if self.on_error == "local":
            return Acquired(self.fallback.acquire_now(checks), "local")
        error = f"rate-limit store {self._safe_url()} is unreachable"
        return Acquired(None, self.on_error, allowed=self.on_error == "allow", error=error)

    def _mark_down(self, exc: BaseException) -> None:
        self.backend_errors += 1
        if not self.healthy:
            return
        self.healthy = False
        log.warning(
            "rate-limit store %s failed (%s: %s); deciding with policy %r until it answers again",
            self._safe_url(), type(exc).__name__, str(exc) or "no answer in time", self.on_error,
        )
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        delay = self._probe_min
        while True:
            await asyncio.sleep(delay)
            if await self.ping():
                self.healthy = True
                log.warning("rate-limit store %s answers again; shared budgets resume", self._safe_url())
                return
            delay = min(delay * 2, self._probe_max)

    def _safe_url(self) -> str:
        # Never log a password embedded in the URL.
        head, sep, tail = self.url.rpartition("@")
        return f"{self.url.split('://', 1)[0]}://***@{tail}" if sep else self.url
