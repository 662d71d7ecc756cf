"""One test per rule-file failure mode: each names file:line:column and, where known, the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from clearwall.errors import RuleSetError
from clearwall.policy.loader import load_rules

GOOD = """\
version: 1
destinations:
  - name: api
    hosts: [api.example.com]
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def errors_of(path: Path, environ: dict | None = None) -> list[str]:
    with pytest.raises(RuleSetError) as e:
        load_rules(path, environ=environ or {})
    return [str(x) for x in e.value.errors]


def test_a_minimal_file_loads_with_safe_defaults(tmp_path):
    rules = load_rules(write(tmp_path, GOOD), environ={})
    s = rules.settings
    assert s.default == "deny" and s.mode == "enforce"
    assert s.limits.request_body == 10 * 1024**2 and s.limits.response_body == 50 * 1024**2
    assert s.log.max_body_bytes == 1024**2 and "authorization" in s.log.redact_headers
    assert s.scan_timeout == pytest.approx(0.1) and s.ssrf.deny_private_ranges
    assert rules.destinations[0].ports is None and len(rules.version) == 12


@pytest.mark.parametrize("text, where, message", [
    ("version: 1\ndestinations:\n  - name: api\n    hots: [a.com]\n", "4:5", "unknown key 'hots' (did you mean 'hosts'?)"),
    ("destinations: []\n", "1:1", "missing `version: 1`"),
    ("version: 2\n", "1:1", "unsupported version"),
    ("version: 1\ndestinations:\n  - hosts: [a.com]\n", "3:5", "missing required key 'name'"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [bücher.de]\n", "4:13", 'use "xn--bcher-kva.de"'),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n    ports: [0]\n", "5:13", "greater than or equal to 1"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n    paths: [repos]\n", "5:13", "must start with /"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n    methods: [get]\n", "5:15", "should match pattern"),
    ("version: 1\nsettings:\n  limits: {request_body: 10XB}\n", "3:12", "expected a size like 10MiB"),
    ("version: 1\nsettings:\n  log: {retention: soon}\n", "3:9", "expected a duration"),
    ("version: 1\nsettings:\n  ssrf: {allow: [10.0.0.0/40]}\n", "3:18", "not a valid IP address or CIDR"),
    ("version: 1\nsettings:\n  rate_limit_backend: mysql://x\n", "3:3", "'memory' or a redis:// URL"),
    ("version: 1\nsettings:\n  rate_limit_backend: redis://\n", "3:3", "'memory' or a redis:// URL"),
    ("version: 1\nfilters:\n  - name: f\n    pattern: '(unclosed'\n", "4:5", "pattern does not compile"),
    ("version: 1\nfilters:\n  - name: f\n    pattern: a\n    where: [body]\n", "5:13", "Input should be 'request.url'"),
    ("version: 1\nfilters:\n  - name: f\n    pattern: a\n    action: drop\n", "5:5", "Input should be 'block'"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n  - name: a\n    hosts: [b.com]\n", "5:5", "already used at"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: []\n", "4:5", "at least 1 item"),
    ("version: 1\nversion: 1\n", "2:1", "duplicate key 'version'"),
    ("version: 1\ndestinations: [\n", "3:1", "invalid YAML"),
    ("", "1:1", "the file is empty"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n    clients: [ghost]\n", "3:5", "unknown client 'ghost'"),
    ("version: 1\ndestinations:\n  - name: a\n    hosts: [a.com]\n    tls: passthrough\n    paths: [/x]\n", "3:5",
     "cannot be enforced: remove them"),
    ("version: 1\nclients:\n  - name: c\n    match: {proxy_user: c}\n", "3:5", "proxy_user and token_env go together"),
    ("version: 1\nfilters:\n  - name: f\n    pattern: a\n    validate: crc32\n", "5:5", "unknown validator 'crc32'"),
    ("version: 1\nfilters:\n  - name: f\n    pattern: 'x*'\n", "4:5", "pattern can match the empty string"),
    ("version: 1\nrate_limits:\n  - name: r\n    requests: 0\n    per: 1m\n", "4:5", "greater than or equal to 1"),
])
def test_each_failure_mode_is_located_and_explained(tmp_path, text, where, message):
    path = write(tmp_path, text)
    errs = errors_of(path)
    assert any(e.startswith(f"{path}:{where}: ") and message in e for e in errs), errs


def test_every_error_in_a_file_is_reported_at_once(tmp_path):
    path = write(tmp_path, "version: 1\ndestinations:\n  - name: a\n    hots: [x]\n  - name: b\n    hosts: [a.com]\n    ports: [99999]\n")
    assert len(errors_of(path)) >= 3  # unknown key, missing hosts, bad port


def test_a_missing_environment_variable_is_a_load_error(tmp_path):
    path = write(tmp_path, """\
        version: 1
        destinations:
          - name: gh
            hosts: [api.github.com]
            inject_headers: {Authorization: "Bearer ${GITHUB_TOKEN}"}
        """)
    errs = errors_of(path)
    assert errs == [f"{path}:5:37: environment variable GITHUB_TOKEN is not set (referenced as ${{GITHUB_TOKEN}})"]
    rules = load_rules(path, environ={"GITHUB_TOKEN": "t0k"})
    assert rules.destinations[0].spec.inject_headers["Authorization"] == "Bearer t0k"


def test_token_env_must_be_set(tmp_path):
    path = write(tmp_path, "version: 1\nclients:\n  - name: c\n    match: {proxy_user: c, token_env: C_TOKEN}\n")
    assert "C_TOKEN (token_env) is not set" in errors_of(path)[0]
    assert load_rules(path, environ={"C_TOKEN": "x"}).clients[0].token == "x"


def test_dollar_dollar_is_a_literal_dollar_and_patterns_are_not_substituted(tmp_path):
    path = write(tmp_path, """\
        version: 1
        destinations:
          - name: a
            hosts: [a.com]
            inject_headers: {X-Price: "$$5"}
        filters:
          - name: f
            pattern: 'x${1,2}y'
        """)
    rules = load_rules(path, environ={})
    assert rules.destinations[0].spec.inject_headers["X-Price"] == "$5"
    assert rules.filters[0].pattern == "x${1,2}y"


def test_a_directory_is_merged_in_name_order(tmp_path):
    write(tmp_path, "version: 1\nsettings: {mode: report}\ndestinations:\n  - name: a\n    hosts: [a.com]\n", "10-base.yaml")
    write(tmp_path, "version: 1\ndestinations:\n  - name: b\n    hosts: [b.com]\n", "20-more.yml")
    (tmp_path / "notes.txt").write_text("ignored")
    rules = load_rules(tmp_path, environ={})
    assert [d.name for d in rules.destinations] == ["a", "b"]
    assert rules.settings.mode == "report"
    assert len(rules.files) == 2


def test_names_must_be_unique_across_files_and_settings_appear_once(tmp_path):
    write(tmp_path, "version: 1\nsettings: {}\ndestinations:\n  - name: a\n    hosts: [a.com]\n", "a.yaml")
    b = write(tmp_path, "version: 1\nsettings: {}\ndeny:\n  - name: a\n    hosts: [b.com]\n", "b.yaml")
    errs = errors_of(tmp_path)
    assert any(e.startswith(f"{b}:2:1:") and "one file only" in e for e in errs), errs
    assert any(e.startswith(f"{b}:4:") and "'a' is already used at" in e for e in errs), errs


def test_an_empty_directory_or_missing_file_is_an_error(tmp_path):
    assert "holds no *.yaml" in errors_of(tmp_path)[0]
    assert "rule file not found" in errors_of(tmp_path / "nope.yaml")[0]


def test_includes_load_pattern_libraries_with_their_own_locations(tmp_path):
    (tmp_path / "patterns").mkdir()
    write(tmp_path, "version: 1\nfilters:\n  - name: tok\n    pattern: 'tok_[a-z]{8}'\n    examples: {match: [tok_abcdefgh]}\n",
          "patterns/lib.yaml")
    rules = load_rules(write(tmp_path, "version: 1\nfilters:\n  - include: patterns/lib.yaml\n"), environ={})
    assert [f.name for f in rules.filters] == ["tok"]
    assert rules.filters[0].where == ["request.url", "request.headers", "request.body", "mcp.arguments"]
    bad = write(tmp_path, "version: 1\nfilters:\n  - name: t2\n    pattern: '['\n", "patterns/bad.yaml")
    errs = errors_of(write(tmp_path, "version: 1\nfilters:\n  - include: patterns/bad.yaml\n  - include: nope.yaml\n"))
    assert any(e.startswith(f"{bad}:4:5:") for e in errs), errs
    assert any("pattern library 'nope.yaml' not found" in e for e in errs), errs


def test_a_library_may_not_widen_access(tmp_path):
    lib = write(tmp_path, "version: 1\nfilters: []\ndestinations:\n  - name: x\n    hosts: [evil.com]\n", "lib.yaml")
    errs = errors_of(write(tmp_path, "version: 1\nfilters:\n  - include: lib.yaml\n"))
    assert any(e.startswith(f"{lib}:3:1:") and "unknown key 'destinations'" in e for e in errs), errs


def test_version_hash_changes_with_the_rules_and_only_then(tmp_path):
    a = load_rules(write(tmp_path, GOOD), environ={}).version
    assert load_rules(write(tmp_path, GOOD), environ={}).version == a
    assert load_rules(write(tmp_path, GOOD.replace("api.example.com", "api2.example.com")), environ={}).version != a


def test_shipped_rule_files_are_valid():
    root = Path(__file__).resolve().parents[2] / "rules"
    env = {"GITHUB_TOKEN": "x", "GITHUB_MCP_PROXY_TOKEN": "y"}
    load_rules(root / "default.yaml", environ=env)
    for example in sorted((root / "examples").glob("*.yaml")):
        load_rules(example, environ=env)
