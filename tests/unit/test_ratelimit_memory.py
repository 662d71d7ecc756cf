"""The memory store stays bounded: idle buckets are forgotten, a hard cap backs that up."""

from __future__ import annotations

import logging

import pytest

from clearwall.ratelimit import LimitSpec, MemoryBackend
from clearwall.ratelimit.backend import BucketCheck


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def one(backend: MemoryBackend, spec: LimitSpec, client: str, source_ip: str = "10.0.0.1") -> bool:
    key = spec.bucket_key(client=client, destination="d", source_ip=source_ip)
    return backend.acquire_now([BucketCheck(spec.bucket_id, key, spec.rate, spec.enforced)])[0].allowed


def test_a_stream_of_one_off_clients_keeps_only_recently_active_buckets():
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    spec = LimitSpec("l", "client", 1, 1)  # a bucket is full again 1 s after its last use
    peak = 0
    for i in range(20_000):
        clock.now = i * 0.01  # 100 new clients per second, each seen once
        assert one(backend, spec, f"client-{i}")
        peak = max(peak, len(backend))
    assert peak <= 102  # one second's worth of clients, not twenty thousand
    assert backend.evicted_idle >= 19_800 and backend.evicted_active == 0


def test_idle_eviction_is_lossless():
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    spec = LimitSpec("l", "client", 2, 10)
    assert one(backend, spec, "a") and one(backend, spec, "a") and not one(backend, spec, "a")
    clock.now = 10.0  # a's bucket is full again: the next decisions may forget it
    for i in range(5):
        one(backend, spec, f"other-{i}")
    assert backend.tat(spec.bucket_key(client="a", destination="d", source_ip="")) is None
    assert one(backend, spec, "a") and one(backend, spec, "a") and not one(backend, spec, "a")


def test_a_bucket_still_refilling_is_kept():
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    spec = LimitSpec("l", "client", 1, 10)
    one(backend, spec, "a")
    clock.now = 9.9
    for i in range(50):
        one(backend, spec, f"other-{i}")
    assert not one(backend, spec, "a")


@pytest.mark.parametrize(
    "case, clients, cap, evicted",
    [
        ("below the cap nothing active is evicted", 99, 100, 0),
        ("exactly at the cap nothing active is evicted", 100, 100, 0),
        ("one past the cap evicts one", 101, 100, 1),
        ("a flood is held at the cap", 1000, 100, 900),
    ],
)
def test_hard_cap_on_keys(case, clients, cap, evicted):
    backend = MemoryBackend(clock=Clock(), max_keys=cap)
    spec = LimitSpec("l", "source_ip", 1, 3600)
    for i in range(clients):
        one(backend, spec, "c", source_ip=f"10.0.{i // 256}.{i % 256}")
    assert len(backend) == min(clients, cap)
    assert backend.evicted_active == evicted


def test_the_cap_evicts_least_recently_used_keys_of_the_flooding_limit():
    backend = MemoryBackend(clock=Clock(), max_keys=50)
    per_client = LimitSpec("per-client", "client", 1, 3600)
    per_ip = LimitSpec("per-ip", "source_ip", 1, 3600)
    assert one(backend, per_client, "steady")
    for i in range(500):
        one(backend, per_ip, "c", source_ip=f"192.0.2.{i % 256}-{i}")
    assert not one(backend, per_client, "steady")  # its exhausted bucket survived the flood
    assert backend.evicted_active == 451


def test_hitting_the_cap_is_logged_once(caplog):
    backend = MemoryBackend(clock=Clock(), max_keys=2)
    spec = LimitSpec("l", "client", 1, 3600)
    with caplog.at_level(logging.WARNING, logger="clearwall.ratelimit.memory"):
        for i in range(10):
            one(backend, spec, f"c{i}")
    assert [r.message for r in caplog.records if "cap of 2 keys" in r.message] and len(caplog.records) == 1


@pytest.mark.parametrize("kwargs", [dict(max_keys=0), dict(max_keys=-5), dict(max_keys=1.5), dict(sweep=0)])
def test_invalid_store_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        MemoryBackend(**kwargs)


def test_smallest_cap_works():
    backend = MemoryBackend(clock=Clock(), max_keys=1)
    spec = LimitSpec("l", "client", 1, 3600)
    assert one(backend, spec, "a") and not one(backend, spec, "a")
    assert one(backend, spec, "b") and len(backend) == 1
