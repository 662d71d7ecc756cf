"""Decision tables for the destination engine and client identification (pure core)."""

from __future__ import annotations

import base64

import pytest

from clearwall.policy.clients import Identity, challenge, identify, parse_basic
from clearwall.policy.decision import Refusal
from clearwall.policy.engine import Target, decide
from clearwall.policy.loader import load_rules

RULES = """\
version: 1
settings: {mode: enforce}
clients:
  - name: gh
    match: {proxy_user: gh, token_env: GH_TOKEN}
  - name: weather
    match: {source: [10.0.3.0/24]}
  - name: pinned-user
    match: {proxy_user: pu, token_env: PU_TOKEN, source: 10.9.0.0/16}
destinations:
  - name: github-api
    hosts: [api.github.com]
    methods: [GET, POST]
    paths: ["/repos/**", "/user"]
    clients: [gh]
    content_types: [application/json]
  - name: raw
    hosts: ["*.githubusercontent.com"]
  - name: weather-api
    hosts: [api.weather.test]
    ports: [443, 8443]
    methods: [GET]
    clients: [weather]
  - name: staged
    hosts: [staged.test]
    paths: ["/ok"]
    mode: report
  - name: mcp
    hosts: [mcp.test]
    mcp: {tools: ["search_*", "get_issue"]}
  - name: pinned
    hosts: [pinned.test]
    tls: passthrough
  - name: soft
    hosts: [soft.test]
  - name: internal-net
    hosts: [10.20.0.0/16]
deny:
  - name: paste
    hosts: [pastebin.com, "*.githubusercontent.com"]
    ports: [443]
  - name: soft-deny
    hosts: [soft.test]
    mode: report
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    p = tmp_path_factory.mktemp("r") / "rules.yaml"
    p.write_text(RULES)
    return load_rules(p, environ={"GH_TOKEN": "gh-secret", "PU_TOKEN": "pu-secret"})


def connect(host, port=443, client=None):
    return Target(host, port, "https", client)


def req(host, method, path, client=None, port=443, content_type=None, has_body=False, tools=()):
    return Target(host, port, "https", client, method, path, content_type, has_body, tuple(tools))


@pytest.mark.parametrize("target, action, kind, rule", [
    # CONNECT
    (connect("api.github.com", client="gh"), "allowed", None, None),
    (connect("API.GITHUB.COM.", client="gh"), "allowed", None, None),
    (connect("api.github.com"), "blocked", "destination_denied", "github-api"),
    (connect("api.github.com", client="weather"), "blocked", "destination_denied", "github-api"),
    (connect("evil.com", client="gh"), "blocked", "destination_denied", "default"),
    (connect("api.github.com", 8443, client="gh"), "blocked", "destination_denied", "default"),
    (connect("pastebin.com"), "blocked", "destination_denied", "paste"),
    (connect("raw.githubusercontent.com"), "blocked", "destination_denied", "paste"),  # deny beats allow
    (connect("raw.githubusercontent.com", 8443), "blocked", "destination_denied", "default"),
    (connect("api.weather.test", 8443, client="weather"), "allowed", None, None),
    (connect("soft.test"), "would_block", None, None),
    (connect("10.20.3.4"), "allowed", None, None),
    (connect("10.21.3.4"), "blocked", "destination_denied", "default"),
    (connect("pinned.test"), "allowed", None, None),
    (connect("bad host!"), "blocked", "destination_denied", "default"),
    # requests
    (req("api.github.com", "GET", "/repos/a/b", "gh"), "allowed", None, None),
    (req("api.github.com", "DELETE", "/repos/a/b", "gh"), "blocked", "request_denied", "github-api"),
    (req("api.github.com", "GET", "/admin", "gh"), "blocked", "request_denied", "github-api"),
    (req("api.github.com", "GET", "/repos/%2e%2e/admin", "gh"), "blocked", "request_denied", "github-api"),
    (req("api.github.com", "GET", "/repos/a%2fb", "gh"), "blocked", "request_denied", "github-api"),
    (req("api.github.com", "POST", "/repos/a/issues", "gh", content_type="application/json; charset=utf-8", has_body=True),
     "allowed", None, None),
    (req("api.github.com", "POST", "/repos/a/issues", "gh", content_type="text/plain", has_body=True),
     "blocked", "request_denied", "github-api"),
    (req("staged.test", "GET", "/nope"), "would_block", None, None),
    (req("staged.test", "GET", "/ok"), "allowed", None, None),
    (req("mcp.test", "POST", "/mcp", tools=["search_code"]), "allowed", None, None),
    (req("mcp.test", "POST", "/mcp", tools=["delete_repo"]), "blocked", "request_denied", "mcp"),
    (req("pinned.test", "GET", "/"), "blocked", "request_denied", "pinned"),
])
def test_decision_table(rules, target, action, kind, rule):
    d = decide(rules, target)
    assert d.action == action, d
    if kind:
        assert d.refusal.kind == kind and d.refusal.rule == rule
    else:
        assert d.refusal is None


def test_report_mode_records_what_would_have_been_refused(rules):
    d = decide(rules, req("staged.test", "GET", "/nope"))
    assert d.would_block == (Refusal("request_denied", "staged", "path /nope is not allowed by staged"),)
    assert "staged" in d.rules


def test_global_report_mode_waives_default_deny(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\nsettings: {mode: report}\n")
    d = decide(load_rules(p, environ={}), connect("anything.example"))
    assert d.allowed and d.would_block[0].rule == "default"


def test_explain_trace_lists_rules_in_evaluation_order(rules):
    d = decide(rules, req("api.github.com", "DELETE", "/repos/a", "gh"), explain=True)
    sections = [s.section for s in d.trace]
    assert sections[0] == "destination" and sections[-1] == "decision"
    assert [s.rule for s in d.trace if s.outcome == "matched"] == ["github-api"]


def test_the_proxy_path_builds_no_trace_and_decides_the_same(rules):
    target = req("api.github.com", "DELETE", "/repos/a", "gh")
    quiet, explained = decide(rules, target), decide(rules, target, explain=True)
    assert quiet.trace == () and explained.trace
    assert (quiet.refusal, quiet.destination, quiet.would_block) == (
        explained.refusal, explained.destination, explained.would_block)


def auth(user, pw):
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


@pytest.mark.parametrize("source, header, client, refused", [
    ("10.0.3.7", None, "weather", False),
    ("::ffff:10.0.3.7", None, "weather", False),
    ("10.0.4.7", None, None, False),
    ("10.0.3.7", auth("gh", "gh-secret"), "gh", False),
    ("10.0.3.7", auth("gh", "wrong"), None, True),
    ("10.0.3.7", auth("nobody", "gh-secret"), None, True),
    ("10.0.3.7", "Bearer gh-secret", None, True),
    ("10.0.3.7", "Basic !!!", None, True),
    ("10.9.1.1", auth("pu", "pu-secret"), "pinned-user", False),
    ("10.8.1.1", auth("pu", "pu-secret"), None, True),  # right token, wrong network
])
def test_client_identification(rules, source, header, client, refused):
    ident = identify(rules, source, header)
    assert ident.client == client
    assert (ident.refusal is not None) is refused
    if refused:
        assert ident.refusal.kind == "auth_required"


def test_require_client_auth_refuses_anonymous_clients(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\nsettings: {require_client_auth: true}\n")
    ident = identify(load_rules(p, environ={}), "10.0.0.1", None)
    assert ident.refusal and ident.refusal.kind == "auth_required"


@pytest.mark.parametrize("header, parsed", [
    (auth("a", "b:c"), ("a", "b:c")),
    ("basic " + base64.b64encode(b"x:y").decode(), ("x", "y")),
    (None, None),
    ("Basic " + base64.b64encode(b"nocolon").decode(), None),
    ("Digest abc", None),
])
def test_basic_credentials_parsing(header, parsed):
    assert parse_basic(header) == parsed


@pytest.mark.parametrize("target, sent, kind", [
    (connect("api.github.com"), False, "auth_required"),  # only proxy_user clients listed: challenge
    (connect("api.github.com"), True, "destination_denied"),  # credentials were sent and refused
    (connect("api.weather.test", 8443), False, "destination_denied"),  # a source-matched client: no challenge
    (connect("evil.com"), False, "destination_denied"),  # default deny is never a challenge
])
def test_unidentified_clients_are_challenged_only_where_credentials_would_help(rules, target, sent, kind):
    d = decide(rules, target)
    assert challenge(rules, d.refusal, Identity(None), sent).kind == kind


def test_host_matches_are_memoised_per_rule_set_and_bounded(rules):
    first = rules.host_rules("api.github.com", 443, "https")
    assert rules.host_rules("api.github.com", 443, "https") is first
    assert [d.name for d in first[1]] == [d.name for d in rules.destinations if d.matches_host("api.github.com", 443, "https")]
    for i in range(5000):
        rules.host_rules(f"h{i}.example", 443, "https")
    assert len(rules._host_memo) <= 4096
