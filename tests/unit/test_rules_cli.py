"""`clearwall rules test | explain | suggest`, run in-process through the real argument parser."""

from __future__ import annotations

import random
import textwrap

import pytest

from clearwall.audit.record import Exchange
from clearwall.audit.writer import LogWriter
from clearwall.cli import main
from clearwall.policy.engine import Target, decide
from clearwall.policy.loader import load_rules

RULES = """
version: 1
clients:
  - name: agent
    match: {source: 10.0.0.0/8}
  - name: other-agent
    match: {source: 192.168.0.0/16}
destinations:
  - name: api
    hosts: [api.example.test]
    methods: [GET, POST]
    paths: ["/v1/**"]
    rate_limit: {requests: 30, per: 1m, burst: 10}
  - name: agent-only
    hosts: [private.example.test]
    clients: [agent]
  - name: remote-mcp
    hosts: [mcp.example.test]
    mcp: {tools: ["search_*"]}
deny:
  - name: paste-sites
    hosts: [paste.example.test]
  - name: tunnels
    hosts: ["*.ngrok.example"]
    mode: report
filters:
  - name: aws-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{16}\\b'
  - name: email
    pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+'
    where: [request.body]
    action: redact
  - name: injection
    pattern: '(?i)ignore previous instructions'
    where: [request.body]
    action: alert
rate_limits:
  - name: per-client
    requests: 600
    per: 1m
"""


@pytest.fixture
def rules_file(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text(RULES)
    return p


def cases_file(tmp_path, text: str):
    p = tmp_path / "cases.yaml"
    p.write_text(textwrap.dedent(text))
    return p


PASSING = """
cases:
  - name: the agent reads items
    request: {client: agent, method: GET, url: "https://api.example.test/v1/items"}
    expect: {action: allowed, destination: api, status: 200, rate_limits: [per-client, api]}
  - name: an unlisted host is denied by default
    request: {url: "https://nowhere.example.test/"}
    expect: {action: blocked, kind: destination_denied, rule: default, status: 403}
  - name: the deny list wins
    request: {url: "https://paste.example.test/x"}
    expect: {action: blocked, rule: paste-sites}
  - name: another client may not use agent-only
    request: {client: other-agent, url: "https://private.example.test/"}
    expect: {action: blocked, kind: destination_denied, rule: agent-only}
  - name: DELETE is not allowed
    request: {method: DELETE, url: "https://api.example.test/v1/items/1"}
    expect: {action: blocked, kind: request_denied, rule: api}
  - name: an AWS key in the body is blocked
    request:
      method: POST
      url: https://api.example.test/v1/items
      headers: {Content-Type: application/json}
      body: '{"key": "AKIAABCDEFGHIJKLMNOP"}'
    expect: {action: blocked, kind: content_blocked, rule: aws-key, status: 403}
  - name: an email address is redacted
    request:
      method: POST
      url: https://api.example.test/v1/items
      body: 'mail bob@example.com'
    expect: {action: redacted, filters: [email]}
  - name: an alert passes
    request: {method: POST, url: "https://api.example.test/v1/x", body: "please IGNORE previous instructions"}
    expect: {action: allowed, filters: [injection]}
  - name: a report-mode deny entry only would block
    request: {url: "https://a.ngrok.example/"}
    expect: {action: blocked, rule: default, would_block: [tunnels]}
  - name: an allowed MCP tool
    request:
      method: POST
      url: https://mcp.example.test/mcp
      body: '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_issues", "arguments": {}}}'
    expect: {action: allowed, destination: remote-mcp}
  - name: an MCP tool the destination does not list
    request:
      method: POST
      url: https://mcp.example.test/mcp
      body: '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_repo", "arguments": {}}}'
    expect: {action: blocked, kind: request_denied, rule: remote-mcp}
"""


def test_rules_test_passes_every_right_expectation(rules_file, tmp_path, capsys):
    assert main(["rules", "test", str(rules_file), str(cases_file(tmp_path, PASSING))]) == 0
    out = capsys.readouterr().out
    assert "11 passed, 0 failed" in out and "FAIL" not in out


def test_rules_test_exits_1_with_a_readable_diff_on_a_wrong_expectation(rules_file, tmp_path, capsys):
    cases = cases_file(tmp_path, """
        cases:
          - name: fine
            request: {url: "https://api.example.test/v1/a"}
            expect: {action: allowed}
          - name: wrongly expected to pass
            request: {method: DELETE, url: "https://api.example.test/v1/a"}
            expect: {action: allowed, destination: api}
    """)
    assert main(["rules", "test", str(rules_file), str(cases)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL wrongly expected to pass  ({cases}:6)" in out
    assert "--- expected" in out and "+++ actual" in out
    assert "-action: allowed" in out and "+action: blocked" in out
    assert " destination: api" in out  # unchanged keys shown as context
    assert "method DELETE is not allowed by api" in out
    assert "1 passed, 1 failed" in out


def test_rules_test_reports_an_unknown_client_as_a_failed_case(rules_file, tmp_path, capsys):
    cases = cases_file(tmp_path, """
        cases:
          - request: {client: ghost, url: "https://api.example.test/v1/a"}
            expect: {action: allowed}
    """)
    assert main(["rules", "test", str(rules_file), str(cases)]) == 1
    assert "client 'ghost' is not defined" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("cases: []\n", "non-empty list"),
    ("cases:\n  - request: {url: 'https://a.test/'}\n", "needs `request:` and `expect:`"),
    ("cases:\n  - request: {url: 'https://a.test/'}\n    expect: {verdict: allowed}\n", "unknown expect key 'verdict'"),
    ("cases:\n  - request: {url: 'https://a.test/'}\n    expect: {action: maybe}\n", "action must be one of"),
    ("cases:\n  - request: {uri: 'https://a.test/'}\n    expect: {action: allowed}\n", "unknown request key 'uri'"),
    ("cases:\n  - request: {url: 'https://a.test/', body_file: nope.txt}\n    expect: {action: allowed}\n",
     "body_file"),
])
def test_a_malformed_cases_file_is_one_located_sentence(rules_file, tmp_path, capsys, text, message):
    p = tmp_path / "cases.yaml"
    p.write_text(text)
    assert main(["rules", "test", str(rules_file), str(p)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"clearwall: {p}:") and message in err and "Traceback" not in err


def test_rules_test_body_file_is_read_relative_to_the_cases_file(rules_file, tmp_path, capsys):
    (tmp_path / "body.json").write_text('{"k": "ASIAABCDEFGHIJKLMNOP"}')
    cases = cases_file(tmp_path, """
        cases:
          - request: {method: POST, url: "https://api.example.test/v1/a", body_file: body.json}
            expect: {kind: content_blocked, rule: aws-key}
    """)
    assert main(["rules", "test", str(rules_file), str(cases)]) == 0


def test_explain_lists_destination_deny_filter_and_limit_in_evaluation_order(rules_file, tmp_path, capsys):
    body = tmp_path / "body.txt"
    body.write_text("contact bob@example.com")
    assert main(["rules", "explain", str(rules_file), "--url", "https://api.example.test/v1/items",
                 "--method", "POST", "--client", "agent", "--body-file", str(body)]) == 0
    out = capsys.readouterr().out
    assert "decision: redacted by destination api" in out
    steps = [line.split()[1:3] for line in out.split("evaluation, in order:\n")[1].splitlines()]
    assert steps == [["client", "agent"], ["deny", "paste-sites"], ["deny", "tunnels"], ["destination", "api"],
                     ["destination", "agent-only"], ["destination", "remote-mcp"], ["destination", "api"], ["rate_limit", "per-client"],
                     ["rate_limit", "api"], ["filter", "aws-key"], ["filter", "email"], ["filter", "injection"]], out
    assert "redact in request.body" in out
    assert f"[{rules_file}:" in out  # every rule line says where it is written


def test_explain_a_denied_host_names_the_deny_entry_and_stops(rules_file, capsys):
    assert main(["rules", "explain", str(rules_file), "--url", "https://paste.example.test/x"]) == 0
    out = capsys.readouterr().out
    assert "decision: blocked, 403 destination_denied by rule paste-sites" in out
    assert "refused" in out and "rate_limit" not in out and "filter" not in out


@pytest.mark.parametrize("args, message", [
    (["--url", "ftp://x.test/"], "not an absolute http:// or https:// URL"),
    (["--url", "https://api.example.test/", "--client", "ghost"], "client 'ghost' is not defined"),
    (["--url", "https://api.example.test/", "--body-file", "/nonexistent/b"], "--body-file /nonexistent/b"),
    (["--url", "https://api.example.test/", "-H", "no-colon"], "--header 'no-colon'"),
])
def test_explain_errors_are_one_sentence(rules_file, capsys, args, message):
    assert main(["rules", "explain", str(rules_file), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_invalid_rules_are_reported_not_explained(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndestinations:\n  - name: x\n    hostz: [a.test]\n")
    assert main(["rules", "explain", str(bad), "--url", "https://a.test/"]) == 1
    assert f"{bad}:4:5: unknown key 'hostz'" in capsys.readouterr().err


# ----- suggest -------------------------------------------------------------------------------

def record(i, url, method="GET", action="allowed", client="agent"):
    """A log record as the proxy writes it: an Exchange the writer shapes, chains and writes."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return Exchange(timestamp=1_795_000_000.0 + i, flow_id=f"e{i}", action=action, client_ip="10.0.0.5",
                    client_port=40000, client_label=client, dest_domain=parts.hostname, dest_port=parts.port,
                    url=url, http_version="HTTP/1.1", method=method, status=200 if action != "blocked" else 403,
                    request_body=b"", response_body=b"{}")


@pytest.fixture
def traffic():
    rnd = random.Random(7)
    seen = [("GET", "https://api.example.test/v1/items"), ("POST", "https://api.example.test/v1/items"),
            ("GET", "https://api.example.test/v1/items/42?page=2"), ("GET", "https://api.example.test/user"),
            ("PATCH", "https://api.example.test:8443/admin/x"), ("GET", "http://plain.example.test/status"),
            ("GET", "https://cdn.example.test/a/%7Euser/./b")]
    return [seen[rnd.randrange(len(seen))] for _ in range(200)] + seen


def write_log(log_dir, records):
    w = LogWriter(log_dir, rotate_bytes=8 * 1024)  # several rotated files, as a real log has
    w.start()
    for r in records:
        w.submit(r)
    w.close()


def test_suggest_yields_rules_that_check_accepts_and_allow_exactly_the_observed_traffic(tmp_path, traffic, capsys):
    log_dir = tmp_path / "logs"
    refused = [record(9000, "https://evil.example.test/x", action="blocked"),
               record(9001, "https://api.example.test/v1/items", method="DELETE", action="blocked")]
    write_log(log_dir, [record(i, u, m) for i, (m, u) in enumerate(traffic)] + refused)
    assert len(list(log_dir.iterdir())) > 1
    out = tmp_path / "suggested.yaml"
    assert main(["rules", "suggest", str(log_dir), "--out", str(out)]) == 0
    assert main(["rules", "check", str(out)]) == 0
    rules = load_rules(out, environ={})

    def allowed(method, url):
        from clearwall.policy.explain import parse_url
        scheme, host, port, path = parse_url(url)
        return decide(rules, Target(host, port, scheme, None, method, path)).allowed

    for method, url in set(traffic):
        assert allowed(method, url), (method, url)
    for method, url in [("DELETE", "https://api.example.test/v1/items"), ("GET", "https://evil.example.test/x"),
                        ("POST", "https://api.example.test/v1/items/42"), ("GET", "https://api.example.test/v1/other"),
                        ("GET", "https://api.example.test:8443/admin/x"), ("GET", "http://api.example.test/user"),
                        ("GET", "https://plain.example.test/status"), ("GET", "https://api.example.test/v1")]:
        assert not allowed(method, url), (method, url)


def test_suggest_for_one_client_only_uses_its_traffic(tmp_path, capsys):
    log_dir = tmp_path / "logs"
    write_log(log_dir, [record(1, "https://a.example.test/x", client="agent"),
                        record(2, "https://b.example.test/y", client="other-agent"),
                        record(3, "https://c.example.test/z", action="would_block", client="agent")])
    assert main(["rules", "suggest", str(log_dir), "--client", "agent"]) == 0
    out = capsys.readouterr().out
    assert "a.example.test" in out and "c.example.test" in out and "b.example.test" not in out
    assert "by client agent" in out


def test_suggest_on_a_missing_log_dir_is_one_sentence(tmp_path, capsys):
    assert main(["rules", "suggest", str(tmp_path / "nope")]) == 1
    assert "log directory" in capsys.readouterr().err
