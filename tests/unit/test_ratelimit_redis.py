"""Shared budgets through a real redis-server on 127.0.0.1, its outages and its recovery."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from clearwall.ratelimit import LimitSpec, RateLimiter, RedisBackend
from tests.support.redis_server import redis_server  # noqa: F401  (pytest fixture)

HOUR = 3600  # long periods: wall-clock time passing during a test refills nothing that matters


def limiter_for(url, specs, **options):
    options.setdefault("probe_min", 0.05)
    options.setdefault("probe_max", 0.2)
    return RateLimiter(specs, RedisBackend(url, **options))


async def ask(limiter, specs, client="c1", destination="d1", source_ip="10.0.0.1"):
    return await limiter.check(specs, client=client, destination=destination, source_ip=source_ip)


async def wait_healthy(backend, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not backend.healthy:
        assert time.monotonic() < deadline, "the Redis store never came back"
        await asyncio.sleep(0.02)


def test_two_replicas_share_one_budget(redis_server):
    spec = LimitSpec("shared", "client", 5, HOUR)

    async def scenario():
        one, two = limiter_for(redis_server.url, [spec]), limiter_for(redis_server.url, [spec])
        try:
            results = []
            for replica in (one, two, one, two, one, two, one):
                decision = await ask(replica, [spec])
                assert decision.source == "redis"
                results.append(decision.allowed)
            other = await ask(two, [spec], client="c2")
            return results, other
        finally:
            await one.backend.aclose()
            await two.backend.aclose()

    results, other = asyncio.run(scenario())
    assert results == [True] * 5 + [False, False]
    assert other.allowed


def test_concurrent_requests_never_overspend(redis_server):
    spec = LimitSpec("shared", "destination", 20, HOUR, burst=5)

    async def scenario():
        # A long timeout: this test is about atomicity, not about a busy machine's latency.
        replicas = [limiter_for(redis_server.url, [spec], timeout=5.0) for _ in range(3)]
        try:
            decisions = await asyncio.gather(*(ask(replicas[i % 3], [spec]) for i in range(600)))
            pipelines = sum(r.backend._batcher.pipelines for r in replicas)
            return sum(d.allowed for d in decisions), {d.source for d in decisions}, pipelines
        finally:
            for r in replicas:
                await r.backend.aclose()

    allowed, sources, pipelines = asyncio.run(scenario())
    assert (allowed, sources) == (25, {"redis"})
    assert pipelines < 60  # concurrent requests shared round trips (600 requests)


def test_one_request_at_a_time_is_one_round_trip_each(redis_server):
    spec = LimitSpec("l", "client", 100, HOUR)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec])
        try:
            for _ in range(5):
                await ask(limiter, [spec])
            return limiter.backend._batcher.pipelines
        finally:
            await limiter.backend.aclose()

    assert asyncio.run(scenario()) == 5 + 1  # the first is resent once after loading the script


def test_redis_matches_the_spec_example_and_headers(redis_server):
    spec = LimitSpec("per-client", "client", 5, 60)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec])
        try:
            return [await ask(limiter, [spec]) for _ in range(6)]
        finally:
            await limiter.backend.aclose()

    decisions = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.states[0].remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert 11.5 < refused.retry_after <= 12.0
    assert refused.headers() == {
        "Retry-After": "12",
        "RateLimit-Policy": '"per-client";q=5;w=60',
        "RateLimit": '"per-client";r=0;t=12',
    }


def test_a_refused_request_does_not_drain_other_limits_in_redis(redis_server):
    per_client = LimitSpec("per-client", "client", 1, HOUR)
    per_dest = LimitSpec("per-destination", "destination", 3, HOUR)
    report = LimitSpec("rollout", "destination", 1, HOUR, mode="report")
    specs = [per_client, per_dest, report]

    async def scenario():
        limiter = limiter_for(redis_server.url, specs)
        try:
            first = await ask(limiter, specs, client="c1")
            refusals = [await ask(limiter, specs, client="c1") for _ in range(4)]
            later = [await ask(limiter, specs, client=c) for c in ("c2", "c3", "c4")]
            return first, refusals, later
        finally:
            await limiter.backend.aclose()

    first, refusals, later = asyncio.run(scenario())
    assert first.allowed and first.would_block == ()
    assert all(r.refused_by == per_client for r in refusals)
    assert [d.allowed for d in later] == [True, True, False]
    assert later[0].would_block == (report,)
    assert later[2].refused_by == per_dest


def test_the_script_is_reloaded_after_a_flush_and_keys_expire(redis_server):
    import redis

    spec = LimitSpec("l", "client", 2, 10)
    direct = redis.Redis(port=redis_server.port)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec])
        try:
            first = await ask(limiter, [spec])
            direct.script_flush()
            second = await ask(limiter, [spec])
            third = await ask(limiter, [spec])
            return first, second, third, limiter.backend.backend_errors
        finally:
            await limiter.backend.aclose()

    first, second, third, errors = asyncio.run(scenario())
    assert (first.allowed, second.allowed, third.allowed, errors) == (True, True, False, 0)
    keys = direct.keys("clearwall:rl:*")
    assert len(keys) == 1
    assert 9_000 < direct.pttl(keys[0]) <= 10_001  # gone once the bucket would be full again


@pytest.mark.parametrize(
    "policy, allowed_while_down, source",
    [("local", [True, True, False], "local"), ("deny", [False] * 3, "deny"), ("allow", [True] * 3, "allow")],
)
def test_outage_policy_then_recovery(redis_server, caplog, policy, allowed_while_down, source):
    spec = LimitSpec("shared", "client", 2, HOUR)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec], on_error=policy)
        backend = limiter.backend
        try:
            before = [await ask(limiter, [spec]) for _ in range(3)]  # budget spent in Redis
            redis_server.stop()
            started = time.monotonic()
            during = [await ask(limiter, [spec]) for _ in range(3)]
            during_seconds = time.monotonic() - started
            errors_during = backend.backend_errors
            more = [await ask(limiter, [spec]) for _ in range(50)]
            redis_server.start()
            await wait_healthy(backend)
            after = [await ask(limiter, [spec]) for _ in range(3)]  # a fresh (restarted) Redis
            return before, during, during_seconds, errors_during, more, after, backend
        finally:
            await limiter.backend.aclose()

    with caplog.at_level(logging.WARNING, logger="clearwall.ratelimit.redis_backend"):
        before, during, seconds, errors_during, more, after, backend = asyncio.run(scenario())
    assert [d.allowed for d in before] == [True, True, False]
    assert [d.allowed for d in during] == allowed_while_down
    assert {d.source for d in during + more} == {source}
    if policy != "local":
        assert all(d.error and "unreachable" in d.error for d in during)
    assert seconds < 1.0
    # One failed round trip opened the outage; the 52 requests after it never touched Redis.
    assert errors_during == 1 and backend.backend_errors == 1
    assert backend.fallback_decisions == 53
    assert backend.stats()["healthy"] == 1 and backend.stats()["backend_errors"] == 1
    failures = [r for r in caplog.records if "failed" in r.message]
    assert len(failures) == 1 and policy in failures[0].message
    assert any("answers again" in r.message for r in caplog.records)
    assert [d.allowed for d in after] == [True, True, False]
    assert {d.source for d in after} == {"redis"}


def test_a_frozen_redis_never_blocks_the_event_loop(redis_server):
    spec = LimitSpec("l", "client", 100, HOUR)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec], timeout=0.3, probe_min=0.1)
        ticks: list[float] = []
        stop = asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        try:
            assert (await ask(limiter, [spec])).source == "redis"
            redis_server.pause()
            started = time.monotonic()
            first = await ask(limiter, [spec])  # waits at most the timeout, loop keeps running
            waited = time.monotonic() - started
            await asyncio.sleep(0.05)  # the pipeline's own timeout has declared the outage
            t0 = time.monotonic()
            rest = [await ask(limiter, [spec]) for _ in range(20)]
            rest_seconds = time.monotonic() - t0
            redis_server.resume()
            await wait_healthy(limiter.backend)
            back = await ask(limiter, [spec])
        finally:
            stop.set()
            await task
            redis_server.resume()
            await limiter.backend.aclose()
        return first, waited, rest, rest_seconds, back, ticks, started

    first, waited, rest, rest_seconds, back, ticks, started = asyncio.run(scenario())
    assert first.source == "local" and first.allowed
    assert 0.25 <= waited < 1.0
    assert {d.source for d in rest} == {"local"} and rest_seconds < 0.1  # nobody waits any more
    assert back.source == "redis"
    during = [t for t in ticks if started <= t <= started + waited]
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(during) >= 10 and max(gaps) < 0.15


def test_an_unreachable_redis_at_start_uses_the_policy_at_once():
    from tests.support.redis_server import free_port

    spec = LimitSpec("l", "client", 1, HOUR)

    async def scenario():
        limiter = limiter_for(f"redis://127.0.0.1:{free_port()}/0", [spec], on_error="deny")
        try:
            return [await ask(limiter, [spec]) for _ in range(3)], limiter.backend.backend_errors
        finally:
            await limiter.backend.aclose()

    decisions, errors = asyncio.run(scenario())
    assert [d.allowed for d in decisions] == [False] * 3 and errors == 1


def test_passwords_in_the_url_are_not_logged():
    backend = RedisBackend("redis://:s3cret@cache.internal:6379/0")
    assert "s3cret" not in backend._safe_url() and "cache.internal:6379/0" in backend._safe_url()


@pytest.mark.parametrize(
    "case, kwargs, ok",
    [
        ("shortest timeout", dict(timeout=0.001), True),
        ("longest timeout", dict(timeout=10), True),
        ("zero timeout", dict(timeout=0), False),
        ("timeout past ten seconds", dict(timeout=10.5), False),
        ("probe backoff equal bounds", dict(probe_min=1, probe_max=1), True),
        ("probe backoff inverted", dict(probe_min=2, probe_max=1), False),
        ("unknown outage policy", dict(on_error="ignore"), False),
        ("one call per pipeline", dict(max_batch=1), True),
        ("empty pipelines", dict(max_batch=0), False),
    ],
)
def test_store_options_are_checked(case, kwargs, ok):
    if ok:
        RedisBackend("redis://127.0.0.1:6379/0", **kwargs)
    else:
        with pytest.raises(ValueError):
            RedisBackend("redis://127.0.0.1:6379/0", **kwargs)


@pytest.mark.parametrize("max_batch, fewest_pipelines", [(1, 40), (8, 5)])
def test_max_batch_caps_calls_per_pipeline(redis_server, max_batch, fewest_pipelines):
    spec = LimitSpec("l", "client", 1000, HOUR)

    async def scenario():
        limiter = limiter_for(redis_server.url, [spec], max_batch=max_batch)
        try:
            await ask(limiter, [spec])  # load the script first
            before = limiter.backend._batcher.pipelines
            decisions = await asyncio.gather(*(ask(limiter, [spec]) for _ in range(40)))
            return decisions, limiter.backend._batcher.pipelines - before
        finally:
            await limiter.backend.aclose()

    decisions, pipelines = asyncio.run(scenario())
    assert all(d.allowed and d.source == "redis" for d in decisions)
    assert pipelines >= fewest_pipelines


@pytest.mark.parametrize("ci, outcome", [("1", pytest.fail.Exception), (None, pytest.skip.Exception)])
def test_a_missing_redis_server_skips_locally_and_fails_under_ci(monkeypatch, ci, outcome):
    from tests.support import redis_server as support

    monkeypatch.setattr(support, "redis_binary", lambda: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome):
        support.require_redis_server()


def test_the_test_server_restarts_on_the_same_port(redis_server):
    from tests.support.redis_server import ping

    port = redis_server.port
    redis_server.stop()
    assert not redis_server.running and not ping(port)
    redis_server.start()
    assert redis_server.port == port and ping(port)


def test_redis_and_memory_decide_alike(redis_server):
    """The Lua script mirrors the Python rules: same random traffic, same answers, both stores."""
    import random

    from clearwall.ratelimit import MemoryBackend

    day = 86_400  # no token refills during the test, so wall-clock time cannot matter
    specs = [
        LimitSpec("per-client", "client", 4, day, burst=1),
        LimitSpec("per-destination", "destination", 6, day),
        LimitSpec("per-pair", "client+destination", 2, day, burst=1),
        LimitSpec("per-ip", "source_ip", 5, day),
        LimitSpec("rollout", "client", 2, day, mode="report"),
    ]
    rng = random.Random(20261122)
    traffic = [
        (
            rng.sample(specs, rng.randint(1, len(specs))),
            rng.choice(["a", "b", "c"]),
            rng.choice(["d1", "d2"]),
            rng.choice(["10.0.0.1", "10.0.0.2", "::1"]),
        )
        for _ in range(300)
    ]

    def summary(d):
        return (d.allowed, d.refused_by and d.refused_by.name, tuple(s.name for s in d.would_block),
                tuple((s.spec.name, s.allowed, s.remaining) for s in d.states))

    async def scenario():
        in_redis = limiter_for(redis_server.url, specs, timeout=5.0)
        in_memory = RateLimiter(specs, MemoryBackend(clock=lambda: 0.0))
        try:
            out = []
            for matching, client, dest, ip in traffic:
                r = await ask(in_redis, matching, client, dest, ip)
                m = await ask(in_memory, matching, client, dest, ip)
                assert r.source == "redis"
                out.append((summary(r), summary(m)))
            return out
        finally:
            await in_redis.backend.aclose()

    pairs = asyncio.run(scenario())
    assert [r for r, _ in pairs] == [m for _, m in pairs]
    assert 30 < sum(r[0] for r, _ in pairs) < 270  # the traffic exercised both outcomes
