"""In-process bucket store: one float (the GCRA TAT) per key, in one LRU-ordered dict per limit.

Runs on the event loop without locks: `acquire` never awaits between reading and writing, so
no other coroutine can interleave (asyncio is single-threaded). Every operation is O(1) in the
number of keys:

- a dict lookup and store per matching limit;
- idle eviction: each decision looks at the `sweep` least recently used keys of every limit it
  touched and forgets those whose bucket is full again (TAT not in the future). A full bucket is
  what an unknown key gets, so this is lossless. Within one limit a key's TAT is at most one
  bucket's refill time after its last use, so an idle key lingers at most that long;
- a hard cap `max_keys` over all limits as a backstop (e.g. a flood of distinct source IPs): the
  least recently used key of the *largest* limit is dropped even if not full, so a flood under one
  limit evicts its own keys, not other limits'. Dropping a non-full bucket hands its owner a fresh
  one, so it is counted (`evicted_active`) and logged once; size `max_keys` above the number of
  keys active within one refill period.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from clearwall.ratelimit.backend import Acquired, BucketCheck, decide
from clearwall.ratelimit.gcra import Verdict

log = logging.getLogger(__name__)

DEFAULT_MAX_KEYS = 100_000


class MemoryBackend:
    """Buckets of this process only. `clock` returns seconds (monotonic by default)."""

    name = "memory"

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
        sweep: int = 2,
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"max_keys must be a whole number of at least 1, not {max_keys!r}")
        if isinstance(sweep, bool) or not isinstance(sweep, int) or sweep < 1:
            raise ValueError(f"sweep must be a whole number of at least 1, not {sweep!r}")
        self._clock = clock
        self._max_keys = max_keys
        self._sweep = sweep
        self._limits: dict[str, OrderedDict[str, float]] = {}
        self._count = 0
        self.evicted_idle = 0
        self.evicted_active = 0
        self._warned_cap = False

    def __len__(self) -> int:
        return self._count

    def stats(self) -> dict[str, int]:
        """Counters for metrics: keys held, idle keys forgotten, refilling keys dropped by the cap."""
        return {"keys": self._count, "evicted_idle": self.evicted_idle, "evicted_active": self.evicted_active}

    def tat(self, key: str) -> float | None:
        """The stored TAT of a storage key (for tests and diagnostics)."""
        bucket_id = key.split(":", 1)[0]
        return self._limits.get(bucket_id, {}).get(key)

    async def acquire(self, checks: Sequence[BucketCheck]) -> Acquired:
        return Acquired(self.acquire_now(checks), self.name)

    def acquire_now(self, checks: Sequence[BucketCheck]) -> list[Verdict]:
        """Synchronous `acquire` (for the Redis backend's local fallback and benchmarks)."""
        now = self._clock()
        tables = [self._limits.get(c.bucket_id) for c in checks]
        tats = [t.get(c.key) if t is not None else None for c, t in zip(checks, tables)]
        verdicts, store = decide(checks, tats, now)
        for check, table, verdict, keep in zip(checks, tables, verdicts, store):
            if keep:
                if table is None:
                    table = self._limits[check.bucket_id] = OrderedDict()
                if check.key not in table:
                    self._count += 1
                table[check.key] = verdict.tat
                table.move_to_end(check.key)
        for check in checks:
            self._sweep_idle(check.bucket_id, now)
        if self._count > self._max_keys:
            self._evict_over_cap()
        return verdicts

    def retain(self, bucket_ids: frozenset[str]) -> None:
        for bucket_id in [b for b in self._limits if b not in bucket_ids]:
            self._count -= len(self._limits.pop(bucket_id))

    async def aclose(self) -> None:
        self._limits.clear()
        self._count = 0

    def _sweep_idle(self, bucket_id: str, now: float) -> None:
        table = self._limits.get(bucket_id)
        for _ in range(self._sweep):
            if not table:
                break
            oldest = next(iter(table))
            if table[oldest] > now:
                break
            del table[oldest]
            self._count -= 1
            self.evicted_idle += 1
        if table is not None and not table:
            del self._limits[bucket_id]

    def _evict_over_cap(self) -> None:
        while self._count > self._max_keys:
            # O(number of limits), which is the number of rules: small and fixed.
            bucket_id, table = max(self._limits.items(), key=lambda item: len(item[1]))
            table.popitem(last=False)
            self._count -= 1
            self.evicted_active += 1
            if not table:
                del self._limits[bucket_id]
            if not self._warned_cap:
                self._warned_cap = True
                log.warning(
                    "rate-limit memory store reached its cap of %d keys; least recently used "
                    "buckets are being forgotten before they refill",
                    self._max_keys,
                )
