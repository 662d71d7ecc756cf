"""GCRA arithmetic on a fake clock: the SPEC §3 bucket, its edges and fractional rates."""

from __future__ import annotations

import pytest

from clearwall.ratelimit.gcra import Rate, evaluate, unconsumed


def run_schedule(rate: Rate, times: list[float]) -> list[bool]:
    """Send one request at each time (consuming when admitted); return the admissions."""
    tat = None
    out = []
    for now in times:
        verdict = evaluate(rate, tat, now)
        if verdict.allowed:
            tat = verdict.tat
        out.append(verdict.allowed)
    return out


T, F = True, False
SEVENTH = 13 / 7  # 7 per 13 s: one token every 1.857142… s

SCHEDULES = [
    ("5 per minute lets five through at once and refuses the sixth",
     (5, 60, 0), [0] * 6, [T, T, T, T, T, F]),
    ("after the first five, one more every 12 seconds",
     (5, 60, 0), [0] * 5 + [11.99, 12, 12, 23.99, 24], [T] * 5 + [F, T, F, F, T]),
    ("burst tokens come on top of the requests",
     (2, 10, 3), [0] * 6, [T] * 5 + [F]),
    ("burst does not change the refill rate",
     (2, 10, 3), [0] * 5 + [4.99, 5], [T] * 5 + [F, T]),
    ("a long idle period refills the bucket but never past full",
     (5, 60, 0), [0] * 5 + [10_000] * 6, [T] * 5 + [T] * 5 + [F]),
    ("half the period gives back half the tokens",
     (10, 10, 0), [0] * 10 + [5] * 6, [T] * 10 + [T] * 5 + [F]),
    ("7 per 13 s: seven at once, then one every 13/7 s",
     (7, 13, 0), [0] * 8 + [SEVENTH - 0.01, SEVENTH, SEVENTH, 2 * SEVENTH], [T] * 7 + [F, F, T, F, T]),
    ("7 per 13 s is full again exactly 13 s later",
     (7, 13, 0), [0] * 7 + [12.99, 13, 13, 13, 13, 13, 13, 13], [T] * 7 + [T] + [T] * 6 + [F]),
    ("sub-second periods: 10 per 0.5 s",
     (10, 0.5, 0), [0] * 11 + [0.05], [T] * 10 + [F, T]),
    ("one request per hour with no burst",
     (1, 3600, 0), [0, 1, 3599.9, 3600], [T, F, F, T]),
    ("steady traffic at exactly the rate is never refused",
     (4, 1, 0), [i * 0.25 for i in range(400)], [T] * 400),
    ("steady traffic just above the rate eventually is",
     (4, 1, 0), [i * 0.24 for i in range(200)], None),
]


@pytest.mark.parametrize("case, shape, times, expected", SCHEDULES, ids=[c[0] for c in SCHEDULES])
def test_schedule(case, shape, times, expected):
    admitted = run_schedule(Rate.of(*shape), times)
    if expected is None:
        assert not all(admitted) and admitted[:4] == [T] * 4
    else:
        assert admitted == expected


def test_a_full_bucket_refuses_with_the_wait_for_one_token():
    rate = Rate.of(5, 60, 0)
    tat = None
    for _ in range(5):
        tat = evaluate(rate, tat, 0.0).tat
    refused = evaluate(rate, tat, 0.0)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after == pytest.approx(12.0)
    assert refused.reset == pytest.approx(60.0)
    assert refused.tat == tat  # a refusal stores nothing new
    later = evaluate(rate, tat, 11.5)
    assert later.allowed is False and later.retry_after == pytest.approx(0.5)


@pytest.mark.parametrize(
    "case, shape, sent, remaining, retry_after, reset",
    [
        ("first request of a fresh bucket", (5, 60, 0), 1, 4, 0.0, 12.0),
        ("last token taken: the next request must wait one interval", (5, 60, 0), 5, 0, 12.0, 60.0),
        ("burst counts in remaining", (5, 60, 5), 1, 9, 0.0, 12.0),
        ("fractional interval", (7, 13, 0), 3, 4, 0.0, 3 * 13 / 7),
    ],
)
def test_remaining_retry_after_and_reset_after_admission(case, shape, sent, remaining, retry_after, reset):
    rate = Rate.of(*shape)
    tat, verdict = None, None
    for _ in range(sent):
        verdict = evaluate(rate, tat, 100.0)
        tat = verdict.tat
    assert verdict.allowed
    assert verdict.remaining == remaining
    assert verdict.retry_after == pytest.approx(retry_after)
    assert verdict.reset == pytest.approx(reset)


def test_an_unconsumed_admission_reports_the_untouched_bucket():
    rate = Rate.of(5, 60, 0)
    first = evaluate(rate, None, 0.0)
    untouched = unconsumed(rate, first)
    assert (untouched.remaining, untouched.reset, untouched.tat) == (5, 0.0, 0.0)
    refused = evaluate(rate, 60.0, 0.0)
    assert unconsumed(rate, refused) is refused


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("zero requests", (0, 60, 0), "'requests'"),
        ("fractional requests", (1.5, 60, 0), "'requests'"),
        ("boolean requests", (True, 60, 0), "'requests'"),
        ("zero period", (5, 0, 0), "'per'"),
        ("negative period", (5, -1, 0), "'per'"),
        ("infinite period", (5, float("inf"), 0), "'per'"),
        ("period as text", (5, "1m", 0), "'per'"),
        ("negative burst", (5, 60, -1), "'burst'"),
        ("fractional burst", (5, 60, 0.5), "'burst'"),
    ],
)
def test_invalid_rates_are_refused_with_the_field_named(case, args, message):
    with pytest.raises(ValueError, match=message):
        Rate.of(*args)


@pytest.mark.parametrize("shape", [(1, 1, 0), (5, 60, 0), (600, 60, 100), (7, 13, 2), (3, 0.1, 0)])
def test_smallest_valid_values_and_capacity(shape):
    rate = Rate.of(*shape)
    assert rate.capacity == shape[0] + shape[2]
    assert rate.tolerance == pytest.approx(shape[1] * rate.capacity / shape[0])
    assert run_schedule(rate, [0.0] * (rate.capacity + 1)) == [T] * rate.capacity + [F]


# GCRA against a literal token bucket (tokens as a float, refilled on every request) on random
# schedules: the two must admit the same requests. Requests landing within a microsecond of a
# token boundary are skipped, where float rounding may legitimately differ.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def token_bucket(requests: int, per: float, burst: int, times: list[float]) -> list[bool | None]:
    capacity = requests + burst
    tokens, last, out = float(capacity), times[0] if times else 0.0, []
    for now in times:
        tokens = min(capacity, tokens + (now - last) * requests / per)
        last = now
        if abs(tokens - 1.0) < 1e-6 * max(1.0, requests / per):
            out.append(None)  # on the boundary: either answer is right
        elif tokens >= 1.0:
            tokens -= 1.0
            out.append(True)
        else:
            out.append(False)
    return out


@settings(max_examples=300, deadline=None)
@given(
    requests=st.integers(1, 50),
    per=st.sampled_from([0.5, 1.0, 7.0, 13.0, 60.0, 3600.0]),
    burst=st.integers(0, 20),
    gaps=st.lists(st.floats(0.0, 5.0, allow_nan=False), min_size=1, max_size=80),
)
def test_gcra_admits_exactly_what_a_token_bucket_admits(requests, per, burst, gaps):
    times, now = [], 0.0
    for gap in gaps:
        now += gap
        times.append(now)
    expected = token_bucket(requests, per, burst, times)
    if None in expected:
        times = times[: expected.index(None)]  # past a boundary tie the two may diverge
        expected = expected[: len(times)]
    assert run_schedule(Rate.of(requests, per, burst), times) == expected
