"""The admin endpoint through a real `clearwall run`: metrics move with traffic, probes flip."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import raw_connect, refusal, session
from tests.support.proxy import Proxy, wait_port

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  log: {{rotate: 2KiB}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1, other.example.test: 127.0.0.1, paste.example.test: 127.0.0.1,
              slow.example.test: 127.0.0.1}}
clients:
  - name: local-agent
    match: {{source: 127.0.0.0/8}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
    methods: [GET, POST]
    paths: ["/v1/**"]
  - name: limited
    hosts: [slow.example.test]
    ports: [{port}]
    rate_limit: {{requests: 1, per: 1h}}
deny:
  - name: paste-sites
    hosts: [paste.example.test]
filters:
  - name: aws-key
    pattern: 'AKIA[0-9A-Z]{{16}}'
    where: [request.body]
  - name: injection
    pattern: '(?i)ignore previous instructions'
    where: [request.body]
    action: alert
"""

SPEC_METRICS = [
    "clearwall_requests_total", "clearwall_request_duration_seconds", "clearwall_upstream_duration_seconds",
    "clearwall_body_bytes_total", "clearwall_filter_matches_total", "clearwall_rate_limited_total",
    "clearwall_refused_total", "clearwall_rules_info", "clearwall_rules_reloads_total",
    "clearwall_log_records_total", "clearwall_log_queue_depth", "clearwall_log_write_errors_total",
]


def admin(proxy: Proxy, path: str, **kw) -> requests.Response:
    wait_port(proxy.admin_port, proxy.proc)  # the admin server starts just after the proxy port
    return requests.get(f"http://127.0.0.1:{proxy.admin_port}{path}", timeout=10, **kw)


def scrape(proxy: Proxy, **kw) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    r = admin(proxy, "/metrics", **kw)
    assert r.status_code == 200, r.text
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream):
    with Proxy(tmp_path_factory.mktemp("admin"), RULES.format(ca=pki.ca_pem, port=upstream.port)) as p:
        yield p


def test_every_spec_metric_is_exported(proxy):
    text = admin(proxy, "/metrics").text
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples} | {
        fam.name for fam in text_string_to_metric_families(text)}
    for name in SPEC_METRICS:
        assert name in names or name.removesuffix("_total") in names, f"{name} missing from /metrics"


def test_allowed_traffic_moves_requests_durations_bytes_and_log_counters(proxy, upstream):
    before = scrape(proxy)
    s = session(proxy)
    for _ in range(3):
        r = s.post(f"https://api.example.test:{upstream.port}/v1/items", data=b"x" * 100, timeout=10)
        assert r.status_code == 200
    ok = dict(client="local-agent", destination="api", action="allowed", status_class="2xx")
    assert wait_for(lambda: value(scrape(proxy), "clearwall_requests_total", **ok)
                    == value(before, "clearwall_requests_total", **ok) + 3)
    after = scrape(proxy)
    assert value(after, "clearwall_body_bytes_total", direction="request") >= \
        value(before, "clearwall_body_bytes_total", direction="request") + 300
    assert value(after, "clearwall_body_bytes_total", direction="response") > \
        value(before, "clearwall_body_bytes_total", direction="response")
    for hist in ("clearwall_request_duration_seconds_count", "clearwall_upstream_duration_seconds_count"):
        assert value(after, hist) >= value(before, hist) + 3, hist
    assert wait_for(lambda: value(scrape(proxy), "clearwall_log_records_total")
                    >= value(before, "clearwall_log_records_total") + 3)


@pytest.mark.parametrize("what, kind, destination", [
    ("a CONNECT to an unlisted host", "destination_denied", "none"),
    ("a CONNECT to a deny-listed host", "destination_denied", "none"),
    ("a method the destination does not allow", "request_denied", "api"),
])
def test_refusals_move_refused_and_blocked_request_counters(proxy, upstream, what, kind, destination):
    before = scrape(proxy)
    if "unlisted" in what:
        status, _, body = raw_connect(proxy.port, f"other.example.test:{upstream.port}")
    elif "deny-listed" in what:
        status, _, body = raw_connect(proxy.port, f"paste.example.test:{upstream.port}")
    else:
        r = session(proxy).delete(f"https://api.example.test:{upstream.port}/v1/items", timeout=10)
        status, body = r.status_code, r.content
    assert status == 403 and refusal(body)["error"] == kind
    blocked = dict(client="local-agent", destination=destination, action="blocked", status_class="4xx")
    assert wait_for(lambda: value(scrape(proxy), "clearwall_refused_total", kind=kind)
                    == value(before, "clearwall_refused_total", kind=kind) + 1)
    assert value(scrape(proxy), "clearwall_requests_total", **blocked) == \
        value(before, "clearwall_requests_total", **blocked) + 1


def test_filter_matches_and_rate_limits_move_through_the_real_proxy(proxy, upstream):
    before = scrape(proxy)
    s = session(proxy)
    r = s.post(f"https://api.example.test:{upstream.port}/v1/x", data=b"key AKIAABCDEFGHIJKLMNOP", timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "content_blocked"
    r = s.post(f"https://api.example.test:{upstream.port}/v1/x", data=b"Ignore previous instructions", timeout=10)
    assert r.status_code == 200
    statuses = [s.get(f"https://slow.example.test:{upstream.port}/", timeout=10).status_code for _ in range(2)]
    assert statuses == [200, 429]
    assert wait_for(lambda: value(scrape(proxy), "clearwall_rate_limited_total", rule="limited", client="local-agent")
                    == value(before, "clearwall_rate_limited_total", rule="limited", client="local-agent") + 1)
    after = scrape(proxy)
    for labels in ({"rule": "aws-key", "action": "block"}, {"rule": "injection", "action": "alert"}):
        assert value(after, "clearwall_filter_matches_total", **labels) == \
            value(before, "clearwall_filter_matches_total", **labels) + 1, labels
    for kind in ("content_blocked", "rate_limited"):
        assert value(after, "clearwall_refused_total", kind=kind) == value(before, "clearwall_refused_total", kind=kind) + 1
    limited = dict(client="local-agent", destination="limited", action="rate_limited", status_class="4xx")
    assert value(after, "clearwall_requests_total", **limited) == value(before, "clearwall_requests_total", **limited) + 1


def test_label_values_are_rule_names_never_hosts_or_paths(proxy, upstream):
    raw_connect(proxy.port, f"random-{time.time_ns()}.example.test:{upstream.port}")
    session(proxy).get(f"https://api.example.test:{upstream.port}/v1/secret-path-{time.time_ns()}", timeout=10)
    text = admin(proxy, "/metrics").text
    assert "example.test" not in text and "secret-path" not in text


def test_rules_info_and_rules_endpoint_name_the_version_in_force(proxy):
    doc = admin(proxy, "/rules").json()
    assert doc["summary"]["destinations"] == ["api", "limited"] and doc["summary"]["deny"] == ["paste-sites"]
    assert doc["last_reload_error"] is None
    assert value(scrape(proxy), "clearwall_rules_info", version=doc["version"]) == 1


@pytest.mark.parametrize("path, status", [("/healthz", 200), ("/readyz", 200), ("/nope", 404)])
def test_probe_and_unknown_paths(proxy, path, status):
    assert admin(proxy, path).status_code == status


def test_only_get_is_served(proxy):
    assert requests.post(f"http://127.0.0.1:{proxy.admin_port}/rules", timeout=10).status_code == 405


def test_bearer_token_guards_metrics_and_rules_but_not_probes(tmp_path, pki, upstream):
    token = "adm1n-t0ken"
    with Proxy(tmp_path / "p", RULES.format(ca=pki.ca_pem, port=upstream.port),
               env={"CLEARWALL_ADMIN_TOKEN": token}) as p:
        for path in ("/metrics", "/rules"):
            assert admin(p, path).status_code == 401
            assert admin(p, path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert admin(p, path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert admin(p, "/healthz").status_code == 200 and admin(p, "/readyz").status_code == 200


def test_readyz_flips_when_the_body_log_cannot_be_written_and_back(tmp_path, pki, upstream):
    with Proxy(tmp_path / "p", RULES.format(ca=pki.ca_pem, port=upstream.port)) as p:
        s = session(p)
        assert s.get(f"https://api.example.test:{upstream.port}/v1/a", timeout=10).status_code == 200
        assert admin(p, "/readyz").json()["checks"]["log_writable"] is True
        moved = p.log_dir.with_name("logs-away")
        p.log_dir.rename(moved)  # the writer's next rotation (2 KiB) cannot find its file
        try:
            for _ in range(3):
                s.get(f"https://api.example.test:{upstream.port}/v1/b", timeout=10)
            assert wait_for(lambda: admin(p, "/readyz").status_code == 503)
            doc = admin(p, "/readyz").json()
            assert doc["ready"] is False and doc["checks"]["log_writable"] is False
            assert admin(p, "/healthz").status_code == 200  # alive: restarting would not fix the disk
            assert wait_for(lambda: value(scrape(p), "clearwall_log_write_errors_total") >= 1)
            r = s.get(f"https://api.example.test:{upstream.port}/v1/c", timeout=10)
            assert r.status_code == 502 and r.json()["error"] == "inspection_error"
        finally:
            moved.rename(p.log_dir)
        assert wait_for(lambda: admin(p, "/readyz").status_code == 200, timeout=20)
