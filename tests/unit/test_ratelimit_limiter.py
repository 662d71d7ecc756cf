"""RateLimiter on the memory store with a fake clock: keys, several limits, report mode, reload."""

from __future__ import annotations

import asyncio

import pytest

from clearwall.ratelimit import LimitSpec, MemoryBackend, RateLimiter, make_backend, parse_backend_setting
from clearwall.ratelimit.backend import Acquired


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(specs, clock=None):
    clock = clock or Clock()
    return RateLimiter(specs, MemoryBackend(clock=clock)), clock


def check(limiter, specs, client="c1", destination="d1", source_ip="10.0.0.1"):
    return asyncio.run(limiter.check(specs, client=client, destination=destination, source_ip=source_ip))


def test_no_matching_limit_allows_without_touching_the_store():
    limiter, _ = make([])
    decision = check(limiter, [])
    assert decision.allowed and decision.headers() == {}
    assert len(limiter.backend) == 0


def test_spec_example_five_per_minute_then_one_every_12_seconds():
    spec = LimitSpec("per-client", "client", 5, 60)
    limiter, clock = make([spec])
    assert [check(limiter, [spec]).allowed for _ in range(6)] == [True] * 5 + [False]
    refused = check(limiter, [spec])
    assert refused.refused_by == spec and refused.retry_after == pytest.approx(12)
    assert refused.headers() == {
        "Retry-After": "12",
        "RateLimit-Policy": '"per-client";q=5;w=60',
        "RateLimit": '"per-client";r=0;t=12',
    }
    clock.now += 12
    assert check(limiter, [spec]).allowed
    assert not check(limiter, [spec]).allowed


# (kind, second request's (client, destination, source_ip), shares the first's bucket)
FIRST = ("alice", "api.github.com", "10.0.0.1")
KEY_CASES = [
    ("client: same client elsewhere shares", "client", ("alice", "other.example", "10.0.0.2"), True),
    ("client: another client does not", "client", ("bob", "api.github.com", "10.0.0.1"), False),
    ("destination: any client to the same destination shares", "destination", ("bob", "api.github.com", "10.0.0.9"), True),
    ("destination: another destination does not", "destination", ("alice", "other.example", "10.0.0.1"), False),
    ("client+destination: the same pair shares", "client+destination", ("alice", "api.github.com", "10.0.0.9"), True),
    ("client+destination: same client, other destination does not", "client+destination", ("alice", "other.example", "10.0.0.1"), False),
    ("client+destination: other client, same destination does not", "client+destination", ("bob", "api.github.com", "10.0.0.1"), False),
    ("source_ip: the same address shares whatever the client", "source_ip", ("bob", "other.example", "10.0.0.1"), True),
    ("source_ip: another address does not", "source_ip", ("alice", "api.github.com", "10.0.0.2"), False),
]


@pytest.mark.parametrize("case, kind, second, shares", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_key_kinds(case, kind, second, shares):
    spec = LimitSpec("one", kind, 1, 60)
    limiter, _ = make([spec])
    assert check(limiter, [spec], *FIRST).allowed
    assert check(limiter, [spec], *second).allowed is not shares


def test_client_destination_pairs_cannot_collide_through_separators():
    spec = LimitSpec("pair", "client+destination", 1, 60)
    limiter, _ = make([spec])
    assert check(limiter, [spec], "a|b", "c").allowed
    assert check(limiter, [spec], "a", "b|c").allowed
    assert not check(limiter, [spec], "a|b", "c").allowed


def test_a_refused_request_does_not_drain_the_other_limits():
    per_client = LimitSpec("per-client", "client", 1, 60)
    per_dest = LimitSpec("per-destination", "destination", 3, 60)
    both = [per_client, per_dest]
    limiter, _ = make(both)
    assert check(limiter, both, client="c1").allowed
    for _ in range(5):  # c1 is out of tokens; its refusals must not spend the destination's
        decision = check(limiter, both, client="c1")
        assert not decision.allowed and decision.refused_by == per_client
    assert check(limiter, both, client="c2").allowed
    assert check(limiter, both, client="c3").allowed
    refused = check(limiter, both, client="c4")
    assert refused.refused_by == per_dest


def test_refused_by_names_the_limit_with_the_longest_wait():
    fast = LimitSpec("fast", "client", 1, 1)
    slow = LimitSpec("slow", "destination", 1, 100)
    limiter, _ = make([fast, slow])
    check(limiter, [fast, slow])
    refused = check(limiter, [fast, slow])
    assert refused.refused_by == slow and refused.retry_after == pytest.approx(100)
    headers = refused.headers()
    assert headers["Retry-After"] == "100"
    assert headers["RateLimit-Policy"] == '"slow";q=1;w=100, "fast";q=1;w=1'
    assert headers["RateLimit"] == '"slow";r=0;t=100, "fast";r=0;t=1'


def test_an_allowed_decision_reports_every_enforced_limit_state():
    a = LimitSpec("a", "client", 10, 10)
    b = LimitSpec("b", "destination", 2, 60, burst=1)
    limiter, _ = make([a, b])
    decision = check(limiter, [a, b])
    assert decision.allowed and "Retry-After" not in decision.headers()
    assert [(s.spec.name, s.remaining) for s in decision.states] == [("a", 9), ("b", 2)]
    assert decision.headers()["RateLimit"] == '"a";r=9;t=1, "b";r=2;t=30'


def test_report_mode_counts_would_be_refusals_without_refusing():
    report = LimitSpec("rollout", "client", 2, 60, mode="report")
    limiter, _ = make([report])
    decisions = [check(limiter, [report]) for _ in range(4)]
    assert all(d.allowed for d in decisions)
    assert [d.would_block for d in decisions] == [(), (), (report,), (report,)]
    assert decisions[3].headers() == {}  # report-mode limits are not advertised


def test_report_mode_beside_an_enforced_limit():
    enforced = LimitSpec("enforced", "client", 2, 60)
    report = LimitSpec("rollout", "destination", 1, 60, mode="report")
    limiter, clock = make([enforced, report])
    first, second, third = (check(limiter, [enforced, report]) for _ in range(3))
    assert first.allowed and first.would_block == ()
    assert second.allowed and second.would_block == (report,)
    assert not third.allowed and third.refused_by == enforced and third.would_block == (report,)
    assert third.headers()["RateLimit-Policy"] == '"enforced";q=2;w=60'


def test_a_refused_request_does_not_spend_report_mode_tokens():
    enforced = LimitSpec("enforced", "client", 1, 60)
    report = LimitSpec("rollout", "destination", 2, 60, mode="report")
    limiter, _ = make([enforced, report])
    check(limiter, [enforced, report], client="c1")
    for _ in range(3):
        assert not check(limiter, [enforced, report], client="c1").allowed
    assert check(limiter, [enforced, report], client="c2").would_block == ()
    assert check(limiter, [enforced, report], client="c3").would_block == (report,)


def drain(limiter, spec):
    while check(limiter, [spec]).allowed:
        pass


REBUILDS = [
    ("identical spec keeps its exhausted bucket", LimitSpec("l", "client", 2, 60), False),
    ("report to enforce keeps the counts", LimitSpec("l", "client", 2, 60, mode="report"), False),
    ("more requests starts afresh", LimitSpec("l", "client", 3, 60), True),
    ("another period starts afresh", LimitSpec("l", "client", 2, 30), True),
    ("another burst starts afresh", LimitSpec("l", "client", 2, 60, burst=1), True),
    ("another key kind starts afresh", LimitSpec("l", "destination", 2, 60), True),
    ("a renamed limit starts afresh", LimitSpec("m", "client", 2, 60), True),
]


@pytest.mark.parametrize("case, new, fresh", REBUILDS, ids=[c[0] for c in REBUILDS])
def test_rebuild_keeps_state_only_for_unchanged_limits(case, new, fresh):
    old = LimitSpec("l", "client", 2, 60)
    limiter, _ = make([old])
    drain(limiter, old)
    rebuilt = limiter.rebuild([new])
    assert rebuilt.backend is limiter.backend
    decision = check(rebuilt, [new])
    if new.mode == "report":  # not refused, but the kept counts say it would have been
        assert decision.allowed and decision.would_block == ((new,) if not fresh else ())
    else:
        assert decision.allowed is fresh


def test_rebuild_drops_buckets_of_removed_limits():
    keep = LimitSpec("keep", "client", 1, 60)
    gone = LimitSpec("gone", "client", 1, 60)
    limiter, _ = make([keep, gone])
    for client in ("a", "b", "c"):
        check(limiter, [keep, gone], client=client)
    assert len(limiter.backend) == 6
    rebuilt = limiter.rebuild([keep])
    assert len(rebuilt.backend) == 3
    assert not check(rebuilt, [keep], client="a").allowed


def test_an_invalid_rebuild_leaves_the_running_limiter_intact():
    spec = LimitSpec("l", "client", 1, 60)
    limiter, _ = make([spec])
    check(limiter, [spec])
    with pytest.raises(ValueError, match="'dup' is used more than once"):
        limiter.rebuild([LimitSpec("dup", "client", 1, 60), LimitSpec("dup", "destination", 1, 60)])
    assert len(limiter.backend) == 1 and not check(limiter, [spec]).allowed


class BrokenBackend:
    name = "broken"

    async def acquire(self, checks):
        raise RuntimeError("disk on fire")

    def retain(self, bucket_ids):
        pass

    async def aclose(self):
        pass


class PolicyBackend(BrokenBackend):
    def __init__(self, allowed):
        self.allowed = allowed

    async def acquire(self, checks):
        return Acquired(None, "allow" if self.allowed else "deny", allowed=self.allowed, error="down")


def test_a_failing_store_refuses_the_request():
    spec = LimitSpec("l", "client", 100, 60)
    decision = check(RateLimiter([spec], BrokenBackend()), [spec])
    assert not decision.allowed and "RuntimeError" in decision.error and decision.headers() == {}


@pytest.mark.parametrize("allowed", [True, False], ids=["allow policy", "deny policy"])
def test_a_store_without_verdicts_applies_its_policy(allowed):
    spec = LimitSpec("l", "client", 100, 60)
    decision = check(RateLimiter([spec], PolicyBackend(allowed)), [spec])
    assert decision.allowed is allowed and decision.error == "down"


@pytest.mark.parametrize(
    "case, kwargs, message",
    [
        ("empty name", dict(name="", key="client", requests=1, per=1), "'name'"),
        ("unknown key kind", dict(name="x", key="user", requests=1, per=1), "'key' must be one of"),
        ("unknown mode", dict(name="x", key="client", requests=1, per=1, mode="audit"), "'mode'"),
        ("zero requests", dict(name="x", key="client", requests=0, per=1), "'requests'"),
        ("zero period", dict(name="x", key="client", requests=1, per=0), "'per'"),
        ("negative burst", dict(name="x", key="client", requests=1, per=1, burst=-2), "'burst'"),
    ],
)
def test_invalid_specs_are_refused(case, kwargs, message):
    with pytest.raises(ValueError, match=message):
        LimitSpec(**kwargs)


def test_specs_equal_by_value_share_a_bucket():
    assert LimitSpec("l", "client", 5, 60).bucket_id == LimitSpec("l", "client", 5, 60.0, mode="report").bucket_id
    assert LimitSpec("l", "client", 5, 60).bucket_id != LimitSpec("l", "client", 5, 60.5).bucket_id


@pytest.mark.parametrize(
    "value, ok",
    [("memory", True), ("redis://127.0.0.1:6379/0", True), ("rediss://cache.internal:6380/1", True),
     ("unix:///run/redis.sock", True), ("memcached://x", False), ("redis", False), ("", False), (None, False)],
)
def test_backend_setting(value, ok):
    if ok:
        assert parse_backend_setting(value) == value
    else:
        with pytest.raises(ValueError, match="rate_limit_backend"):
            parse_backend_setting(value)


def test_make_backend_builds_the_named_store_and_checks_the_policy():
    assert isinstance(make_backend("memory"), MemoryBackend)
    redis_backend = make_backend("redis://127.0.0.1:1/0", on_error="deny")
    assert redis_backend.name == "redis" and redis_backend.on_error == "deny"
    with pytest.raises(ValueError, match="rate_limit_on_backend_error"):
        make_backend("memory", on_error="ignore")


def test_refusal_kind_and_message():
    spec = LimitSpec("per-client", "client", 5, 60)
    limiter, _ = make([spec])
    decisions = [check(limiter, [spec]) for _ in range(6)]
    assert decisions[0].kind is None
    assert decisions[5].kind == "rate_limited"
    assert decisions[5].message() == (
        "Rate limit 'per-client' allows 5 requests per 60 s per client (burst 0); retry in 12 s."
    )
    failed = check(RateLimiter([spec], BrokenBackend()), [spec])
    assert failed.kind == "inspection_error" and "could not be checked" in failed.message()


def test_memory_stats():
    spec = LimitSpec("l", "client", 1, 60)
    limiter, _ = make([spec])
    for c in ("a", "b"):
        check(limiter, [spec], client=c)
    assert limiter.backend.stats() == {"keys": 2, "evicted_idle": 0, "evicted_active": 0}
