"""429 headers: Retry-After and the IETF httpapi RateLimit-Policy / RateLimit structured fields."""

from __future__ import annotations

import re

import pytest

from clearwall.ratelimit import LimitSpec
from clearwall.ratelimit.headers import delay_seconds, quota_window, rate_limit_headers, sf_string

# RFC 9651 List of Strings with integer parameters, as these headers use it.
SF_ITEM = r'"(?:[ !#-\[\]-~]|\\["\\])*"(?:;[a-z*][a-z0-9_.*-]*=-?\d{1,15})*'
SF_LIST = re.compile(rf"^{SF_ITEM}(?:, {SF_ITEM})*$")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("per-client", '"per-client"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("café", '"caf?"'),
        ("tab\there", '"tab?here"'),
    ],
)
def test_names_become_structured_field_strings(name, expected):
    assert sf_string(name) == expected
    assert SF_LIST.match(expected)


@pytest.mark.parametrize(
    "case, requests, per, expected",
    [
        ("whole minute", 600, 60, (600, 60)),
        ("SPEC example 5 per minute", 5, 60, (5, 60)),
        ("7 per 13 seconds", 7, 13, (7, 13)),
        ("sub-second period is scaled to one second", 10, 0.5, (20, 1)),
        ("fractional period rounds the window up", 7, 1.5, (9, 2)),
        ("never advertises a zero quota", 1, 1.5, (1, 2)),
    ],
)
def test_quota_and_window(case, requests, per, expected):
    assert quota_window(LimitSpec("l", "client", requests, per)) == expected


@pytest.mark.parametrize(
    "seconds, whole",
    [(0.0, 0), (0.3, 1), (11.2, 12), (12.0, 12), (12.0000000001, 12), (12.01, 13), (-1.0, 0)],
)
def test_delays_round_up_to_whole_seconds(seconds, whole):
    assert delay_seconds(seconds) == whole


def test_refusal_headers_for_the_spec_example():
    spec = LimitSpec("per-client", "client", 600, 60, burst=100)
    headers = rate_limit_headers([(spec, 0, 12.0, 60.0)], retry_after=12.0)
    assert headers == {
        "Retry-After": "12",
        "RateLimit-Policy": '"per-client";q=600;w=60',
        "RateLimit": '"per-client";r=0;t=12',
    }
    assert SF_LIST.match(headers["RateLimit-Policy"]) and SF_LIST.match(headers["RateLimit"])


@pytest.mark.parametrize(
    "case, state, retry_after, expected",
    [
        ("a sub-second wait is still at least one second", (0, 0.2, 0.2), 0.2, ("1", "r=0;t=1")),
        ("tokens left: t is the time until the bucket is full", (3, 0.0, 24.5), None, (None, "r=3;t=25")),
        ("full bucket", (5, 0.0, 0.0), None, (None, "r=5;t=0")),
        ("last token just taken: t is the wait for the next", (0, 12.0, 60.0), None, (None, "r=0;t=12")),
    ],
)
def test_rate_limit_values(case, state, retry_after, expected):
    spec = LimitSpec("l", "client", 5, 60)
    headers = rate_limit_headers([(spec, *state)], retry_after)
    assert headers.get("Retry-After") == expected[0]
    assert headers["RateLimit"] == f'"l";{expected[1]}'


def test_several_policies_form_one_list_each():
    a, b = LimitSpec("a", "client", 5, 60), LimitSpec("b", "destination", 7, 13, burst=2)
    headers = rate_limit_headers([(a, 0, 5.0, 60.0), (b, 4, 0.0, 9.2)], retry_after=5.0)
    assert headers["RateLimit-Policy"] == '"a";q=5;w=60, "b";q=7;w=13'
    assert headers["RateLimit"] == '"a";r=0;t=5, "b";r=4;t=10'
    assert SF_LIST.match(headers["RateLimit-Policy"]) and SF_LIST.match(headers["RateLimit"])


def test_no_states_and_no_refusal_means_no_headers():
    assert rate_limit_headers([], None) == {}
