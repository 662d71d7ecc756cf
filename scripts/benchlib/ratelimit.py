"""Rate-limit decisions per second: in memory, and through a real Redis (started here).

    scripts/bench ratelimit [--seconds 2] [--concurrency 64] [--clients 1000] [--redis-url URL]

Each case runs `RateLimiter.check` (the call the proxy makes per request) for `--seconds`
against limits generous enough that every request is admitted, so the store does the full
read-decide-write each time. Redis cases: one request at a time (latency bound, p50/p99 shown)
and `--concurrency` requests in flight (what a busy proxy sees; they share pipelines).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import shlex
import statistics
import sys
import time

from clearwall.ratelimit import LimitSpec, MemoryBackend, RateLimiter, RedisBackend

HOUR = 3600.0
ONE = [LimitSpec("per-client", "client", 10**9, HOUR)]
THREE = ONE + [
    LimitSpec("per-destination", "destination", 10**9, HOUR),
    LimitSpec("per-pair", "client+destination", 10**9, HOUR, burst=10),
]


async def sequential(limiter: RateLimiter, specs, seconds: float, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        t0 = time.perf_counter()
        decision = await limiter.check(specs, client=f"c{n % clients}", destination="api.example.com", source_ip="10.0.0.1")
        t1 = time.perf_counter()
        assert decision.allowed, decision
        latencies.append(t1 - t0)
        n += 1
        if t1 >= deadline:
            return n / (t1 - start), latencies


async def concurrent(limiter: RateLimiter, specs, seconds: float, clients: int, width: int) -> float:
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        i = w
        while time.perf_counter() < deadline:
            decision = await limiter.check(specs, client=f"c{i % clients}", destination="api.example.com", source_ip="10.0.0.1")
            assert decision.allowed and decision.source == "redis", decision
            count += 1
            i += width

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(width)))
    return count / (time.perf_counter() - start)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1e6 if len(values) > 100 else float("nan")


def row(case: str, rate: float, latencies: list[float] | None = None) -> None:
    lat = f"  p50 {pct(latencies, 50):7.1f} µs  p99 {pct(latencies, 99):7.1f} µs" if latencies else ""
    print(f"  {case:<44} {rate:>11,.0f} decisions/s{lat}", flush=True)


async def bench_memory(args) -> None:
    for label, specs in (("1 limit", ONE), ("3 limits", THREE)):
        limiter = RateLimiter(specs, MemoryBackend())
        rate, lat = await sequential(limiter, specs, args.seconds, args.clients)
        row(f"memory, {label}", rate, lat)


async def bench_redis(url: str, args) -> None:
    for label, specs in (("1 limit", ONE), ("3 limits", THREE)):
        limiter = RateLimiter(specs, RedisBackend(url, timeout=2.0))
        try:
            await sequential(limiter, specs, 0.2, args.clients)  # connect, load the script
            rate, lat = await sequential(limiter, specs, args.seconds, args.clients)
            row(f"redis, {label}, 1 in flight", rate, lat)
            rate = await concurrent(limiter, specs, args.seconds, args.clients, args.concurrency)
            row(f"redis, {label}, {args.concurrency} in flight", rate)
            assert limiter.backend.backend_errors == 0, "Redis calls failed during the benchmark"
        finally:
            await limiter.backend.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench ratelimit", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each case (default 2)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight for Redis (default 64)")
    parser.add_argument("--clients", type=int, default=1000, help="distinct client keys cycled through (default 1000)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a redis-server")
    parser.add_argument("--no-redis", action="store_true", help="memory cases only")
    args = parser.parse_args(argv)

    argv_shown = sys.argv[1:] if argv is None else argv
    print("command: scripts/bench ratelimit " + " ".join(shlex.quote(a) for a in argv_shown))
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu ?'}")
    asyncio.run(bench_memory(args))
    if args.no_redis:
        return 0
    if args.redis_url:
        asyncio.run(bench_redis(args.redis_url, args))
        return 0
    try:
        from tests.support.redis_server import RedisServer
        server = RedisServer()
    except (ImportError, FileNotFoundError) as exc:
        print(f"  redis cases skipped: {exc}")
        return 1
    with server:
        print(f"  (redis-server started on 127.0.0.1:{server.port})")
        asyncio.run(bench_redis(server.url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
