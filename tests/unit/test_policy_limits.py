"""Which rate limits apply to a request, with which mode, and the bucket keys of a request."""

from __future__ import annotations

import pytest

from clearwall.policy.limits import ANONYMOUS, LimitIndex, client_key, destination_key, source_key
from clearwall.policy.loader import load_rules

RULES = """
version: 1
settings:
  mode: {mode}
clients:
  - name: github-mcp
    match: {{source: 10.0.1.0/24}}
  - name: weather-mcp
    match: {{source: 10.0.2.0/24}}
  - name: anonymous
    match: {{source: 10.0.9.0/24}}
destinations:
  - name: github-api
    hosts: [api.github.com]
    rate_limit: {{requests: 30, per: 1m, burst: 10, key: client}}
  - name: weather-api
    hosts: [api.weather.test]
    mode: report
    rate_limit: {{requests: 5, per: 10s, key: destination}}
  - name: plain
    hosts: [plain.test]
rate_limits:
  - name: per-client
    key: client
    requests: 600
    per: 1m
    burst: 100
  - name: github-only
    key: client+destination
    requests: 10
    per: 1s
    destinations: [github-api]
  - name: weather-client-only
    key: source_ip
    requests: 3
    per: 1m
    clients: [weather-mcp]
    mode: report
  - name: weather-on-github
    key: client
    requests: 1
    per: 1h
    clients: [weather-mcp]
    destinations: [github-api, plain]
"""


@pytest.fixture
def index_for(tmp_path):
    def make(mode: str = "enforce", text: str | None = None, **kw) -> LimitIndex:
        path = tmp_path / f"rules-{mode}.yaml"
        path.write_text(text if text is not None else RULES.format(mode=mode))
        return LimitIndex(load_rules(path, environ={}), **kw)

    return make


MATCHING = [
    # (case, client, destination, expected limit names in order)
    ("an unidentified client on a destination without its own limit gets the unscoped limits",
     None, "plain", ["per-client"]),
    ("a destination's own limit comes after the global ones", "github-mcp", "github-api",
     ["per-client", "github-only", "github-api"]),
    ("a limit scoped to clients applies to those clients only", "weather-mcp", "weather-api",
     ["per-client", "weather-client-only", "weather-api"]),
    ("a limit scoped to clients and destinations needs both", "weather-mcp", "github-api",
     ["per-client", "github-only", "weather-client-only", "weather-on-github", "github-api"]),
    ("a limit scoped to clients and destinations, other destination", "weather-mcp", "plain",
     ["per-client", "weather-client-only", "weather-on-github"]),
    ("an unidentified client matches no client-scoped limit", None, "github-api",
     ["per-client", "github-only", "github-api"]),
    ("no allowing destination (report mode): destination-scoped limits do not apply", "weather-mcp", None,
     ["per-client", "weather-client-only"]),
    ("an unknown destination name has no own limit", "github-mcp", "not-a-rule", ["per-client"]),
]


@pytest.mark.parametrize("case,client,destination,expected", MATCHING, ids=[m[0] for m in MATCHING])
def test_which_limits_match_a_request(index_for, case, client, destination, expected):
    assert [s.name for s in index_for().matching(client, destination)] == expected


MODES = [
    # (case, settings.mode, limit, expected mode)
    ("a global limit without mode follows settings.mode enforce", "enforce", "per-client", "enforce"),
    ("a global limit without mode follows settings.mode report", "report", "per-client", "report"),
    ("a global limit's own report mode wins over enforce", "enforce", "weather-client-only", "report"),
    ("a destination's limit follows the destination's own mode", "enforce", "weather-api", "report"),
    ("a destination's limit without a destination mode follows settings enforce", "enforce", "github-api", "enforce"),
    ("a destination's limit without a destination mode follows settings report", "report", "github-api", "report"),
]


@pytest.mark.parametrize("case,mode,name,expected", MODES, ids=[m[0] for m in MODES])
def test_effective_mode_of_each_limit(index_for, case, mode, name, expected):
    spec = next(s for s in index_for(mode).specs if s.name == name)
    assert spec.mode == expected
    assert spec.enforced is (expected == "enforce")


def test_limits_carry_the_rule_numbers_and_key(index_for):
    specs = {s.name: s for s in index_for().specs}
    assert list(specs) == ["per-client", "github-only", "weather-client-only", "weather-on-github",
                           "github-api", "weather-api"]
    own = specs["github-api"]
    assert (own.key, own.requests, own.per, own.burst) == ("client", 30, 60.0, 10)
    assert (specs["weather-api"].key, specs["weather-api"].per, specs["weather-api"].burst) == ("destination", 10.0, 0)
    assert specs["github-only"].key == "client+destination"


def test_the_same_numbers_give_the_same_bucket_across_reloads(index_for, tmp_path):
    before = {s.name: s.bucket_id for s in index_for().specs}
    changed = RULES.format(mode="enforce").replace("requests: 600", "requests: 601").replace("per: 1m\n    burst: 100", "per: 60s\n    burst: 100")
    after = {s.name: s.bucket_id for s in index_for(text=changed).specs}
    assert after["per-client"] != before["per-client"]
    assert {k: v for k, v in after.items() if k != "per-client"} == {k: v for k, v in before.items() if k != "per-client"}


def test_rules_without_rate_limits_have_no_specs(index_for):
    index = index_for(text="version: 1\ndestinations:\n  - name: a\n    hosts: [a.test]\n")
    assert index.specs == () and len(index) == 0
    assert index.matching("x", "a") == ()


def test_the_index_remembers_the_rule_set_fingerprint(index_for, tmp_path):
    index = index_for()
    assert index.version == load_rules(tmp_path / "rules-enforce.yaml", environ={}).fingerprint


@pytest.mark.parametrize("max_cached,cached", [(0, 0), (1, 1), (2, 2)],
                         ids=["cache off", "cache of one keeps the first pair", "cache of two"])
def test_the_matching_cache_is_bounded_and_answers_stay_right(index_for, max_cached, cached):
    index = index_for(max_cached=max_cached)
    pairs = [("github-mcp", "github-api"), ("weather-mcp", "plain"), (None, None)]
    first = [index.matching(c, d) for c, d in pairs]
    assert len(index._cache) == cached
    assert [index.matching(c, d) for c, d in pairs] == first


def test_a_negative_cache_size_is_refused(index_for):
    with pytest.raises(ValueError, match="max_cached"):
        index_for(max_cached=-1)


KEYS = [
    ("a named client keys by its name", lambda: client_key("github-mcp"), "github-mcp"),
    ("an unidentified client keys apart from a client named anonymous", lambda: client_key(None), ANONYMOUS),
    ("an allowing destination keys by its rule name", lambda: destination_key("github-api", "api.github.com"), "github-api"),
    ("no allowing destination keys by the host, lower-cased", lambda: destination_key(None, "API.Example.TEST."), "(api.example.test)"),
    ("an IPv4 peer keys by its address", lambda: source_key("10.0.3.7"), "10.0.3.7"),
    ("an IPv4-mapped IPv6 peer keys as its IPv4 address", lambda: source_key("::ffff:10.0.3.7"), "10.0.3.7"),
    ("an IPv6 peer keys by its compressed address", lambda: source_key("2001:db8:0:0::1"), "2001:db8::1"),
    ("an unparsable peer keys by its text", lambda: source_key("unix-socket"), "unix-socket"),
]


@pytest.mark.parametrize("case,fn,expected", KEYS, ids=[k[0] for k in KEYS])
def test_bucket_key_values(case, fn, expected):
    assert fn() == expected


def test_an_unidentified_client_never_shares_a_bucket_with_a_client_named_anonymous(index_for):
    spec = index_for().specs[0]
    ids = dict(destination="d", source_ip="1.2.3.4")
    assert spec.bucket_key(client=client_key(None), **ids) != spec.bucket_key(client=client_key("anonymous"), **ids)
