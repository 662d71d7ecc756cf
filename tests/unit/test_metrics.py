"""The metrics addon on mitmproxy test flows: what each finished flow adds, and label bounds."""

from __future__ import annotations

import pytest
from mitmproxy.test import taddons, tflow
from prometheus_client.parser import text_string_to_metric_families

from clearwall.mitm.metrics import Metrics, MetricSet, status_class
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.clients import Identity
from clearwall.policy.decision import Decision, Refusal
from clearwall.policy.loader import load_rules


@pytest.fixture
def runtime(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\ndestinations:\n  - name: api\n    hosts: [address]\n    ports: [22]\n")
    return Runtime(rules=load_rules(p, environ={}), admin=("127.0.0.1", 0))


def samples(rt: Runtime) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(rt.metrics.text().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def v(rt: Runtime, name: str, **labels) -> float:
    return samples(rt).get((name, tuple(sorted(labels.items()))), 0.0)


def finished(client="agent", destination="api", refusal=None, would_block=(), matches=(), status=200):
    f = tflow.tflow(resp=True)
    f.response.status_code = status
    st = flow_state(f)
    st.identity = Identity(client)
    st.decision = Decision(refusal, destination, tuple(would_block))
    st.refusal = refusal
    st.would_block = list(would_block)
    st.matches = list(matches)
    return f


def run(rt: Runtime, flow, hook="response"):
    addon = Metrics(rt)
    with taddons.context(addon):
        getattr(addon, hook)(flow)


@pytest.mark.parametrize("status, expected", [(200, "2xx"), (302, "3xx"), (404, "4xx"), (502, "5xx"),
                                              (None, "none"), (0, "none"), (600, "none")])
def test_status_class(status, expected):
    assert status_class(status) == expected


def test_an_allowed_exchange_counts_request_bytes_and_both_durations(runtime):
    f = finished()
    f.request.content = b"a" * 10
    f.response.content = b"b" * 25
    run(runtime, f)
    assert v(runtime, "clearwall_requests_total", client="agent", destination="api", action="allowed",
             status_class="2xx") == 1
    assert v(runtime, "clearwall_body_bytes_total", direction="request") == 10
    assert v(runtime, "clearwall_body_bytes_total", direction="response") == 25
    assert v(runtime, "clearwall_request_duration_seconds_count") == 1
    assert v(runtime, "clearwall_upstream_duration_seconds_count") == 1


def test_a_flow_is_counted_once_even_when_response_and_error_both_fire(runtime):
    f = finished()
    run(runtime, f, "response")
    f.error = tflow.terr()
    run(runtime, f, "error")
    assert v(runtime, "clearwall_requests_total", client="agent", destination="api", action="allowed",
             status_class="2xx") == 1
    assert v(runtime, "clearwall_requests_total", client="agent", destination="api", action="error",
             status_class="2xx") == 0


def test_an_upstream_error_counts_as_error_without_status(runtime):
    f = tflow.tflow(err=True)
    flow_state(f).identity = Identity(None)
    run(runtime, f, "error")
    assert v(runtime, "clearwall_requests_total", client="anonymous", destination="none", action="error",
             status_class="none") == 1


@pytest.mark.parametrize("refusal, action", [
    (Refusal("content_blocked", "aws-key", "m"), "blocked"),
    (Refusal("rate_limited", "per-client", "m"), "rate_limited"),
    (Refusal("inspection_error", "clearwall", "m"), "error"),
])
def test_a_refusal_counts_its_kind_and_has_no_upstream_duration(runtime, refusal, action):
    f = finished(refusal=refusal, status=refusal.status)
    run(runtime, f)
    assert v(runtime, "clearwall_refused_total", kind=refusal.kind) == 1
    assert v(runtime, "clearwall_requests_total", client="agent", destination="api", action=action,
             status_class=status_class(refusal.status)) == 1
    assert v(runtime, "clearwall_upstream_duration_seconds_count") == 0
    assert v(runtime, "clearwall_request_duration_seconds_count") == 1


def test_rate_limited_counts_rule_and_client_refused_or_would_block(runtime):
    run(runtime, finished(refusal=Refusal("rate_limited", "per-client", "m"), status=429))
    run(runtime, finished(would_block=[Refusal("rate_limited", "per-client", "m")]))
    run(runtime, finished(client=None, refusal=Refusal("rate_limited", "global", "m"), status=429))
    assert v(runtime, "clearwall_rate_limited_total", rule="per-client", client="agent") == 2
    assert v(runtime, "clearwall_rate_limited_total", rule="global", client="anonymous") == 1
    assert v(runtime, "clearwall_refused_total", kind="rate_limited") == 2  # would-block refuses nothing
    assert v(runtime, "clearwall_requests_total", client="agent", destination="api", action="would_block",
             status_class="2xx") == 1


def test_every_filter_match_is_counted_by_rule_and_action(runtime):
    matches = [{"rule": "email", "where": "request.body", "action": "redact"},
               {"rule": "email", "where": "response.body", "action": "redact"},
               {"rule": "injection", "where": "sse", "action": "alert"}]
    run(runtime, finished(matches=matches))
    assert v(runtime, "clearwall_filter_matches_total", rule="email", action="redact") == 2
    assert v(runtime, "clearwall_filter_matches_total", rule="injection", action="alert") == 1


def test_a_refused_connect_is_counted_in_http_connect_error(runtime):
    f = tflow.tflow()
    f.request.method = "CONNECT"
    st = flow_state(f)
    st.identity = Identity("agent")
    st.refusal = Refusal("destination_denied", "default", "m")
    from mitmproxy import http
    f.response = http.Response.make(403)
    run(runtime, f, "http_connect_error")
    assert v(runtime, "clearwall_requests_total", client="agent", destination="none", action="blocked",
             status_class="4xx") == 1
    assert v(runtime, "clearwall_refused_total", kind="destination_denied") == 1


def test_log_writer_and_rules_figures_are_read_at_scrape_time(runtime):
    class Writer:
        records_written, write_errors, queue_depth, writable = 7, 2, 3, True

    runtime.writer = Writer()
    Metrics(runtime)
    assert v(runtime, "clearwall_log_records_total") == 7
    assert v(runtime, "clearwall_log_write_errors_total") == 2
    assert v(runtime, "clearwall_log_queue_depth") == 3
    assert v(runtime, "clearwall_rules_info", version=runtime.rules.version) == 1
    Writer.records_written = 9
    assert v(runtime, "clearwall_log_records_total") == 9


def test_reload_results_start_at_zero(runtime):
    runtime.metrics = MetricSet(runtime)
    assert (("clearwall_rules_reloads_total", (("result", "error"),)) in samples(runtime))
    assert v(runtime, "clearwall_rules_reloads_total", result="ok") == 0


def test_with_the_admin_endpoint_off_the_addon_does_nothing(tmp_path):
    rt = Runtime(admin=None)
    run(rt, finished())
    assert rt.metrics is None


def test_registries_are_independent(runtime):
    other = Runtime(rules=runtime.rules, admin=("127.0.0.1", 0))
    run(runtime, finished())
    Metrics(other)
    assert v(other, "clearwall_requests_total", client="agent", destination="api", action="allowed",
             status_class="2xx") == 0


@pytest.mark.parametrize("observed, le, expected", [
    (0.005, "0.005", 1),   # a bucket includes its bound
    (0.0051, "0.005", 0),
    (0.0051, "0.01", 1),
    (500.0, "120.0", 0),   # beyond the last bound: +Inf only
    (500.0, "+Inf", 1),
])
def test_duration_buckets_are_cumulative_and_include_their_bound(runtime, observed, le, expected):
    Metrics(runtime)
    runtime.metrics.request_duration.observe(observed)
    assert v(runtime, "clearwall_request_duration_seconds_bucket", le=le) == expected
    assert v(runtime, "clearwall_request_duration_seconds_sum") == observed


def test_scraping_from_another_thread_while_flows_are_counted(runtime):
    import threading

    Metrics(runtime)
    stop, errors = threading.Event(), []

    def scrape():
        while not stop.is_set():
            try:
                runtime.metrics.text()
            except Exception as e:  # noqa: BLE001 - the test reports it
                errors.append(e)

    t = threading.Thread(target=scrape)
    t.start()
    try:
        for i in range(3000):
            run_flow = finished(client=f"c{i % 50}", destination=f"d{i % 7}")
            runtime.metrics.count(run_flow, flow_state(run_flow), error=False)
    finally:
        stop.set()
        t.join()
    assert not errors
    total = sum(val for (name, _), val in samples(runtime).items() if name == "clearwall_requests_total")
    assert total == 3000


@pytest.mark.parametrize("stats, counters, gauges", [
    ({"keys": 12, "evicted_idle": 3, "evicted_active": 0}, {"evicted_idle": 3, "evicted_active": 0}, {"keys": 12}),
    ({"healthy": 0, "backend_errors": 5, "fallback_decisions": 9, "slow_calls": 1, "local_keys": 4},
     {"backend_errors": 5, "fallback_decisions": 9, "slow_calls": 1}, {"healthy": 0, "local_keys": 4}),
])
def test_rate_limit_store_stats_are_exported_at_scrape_time(runtime, stats, counters, gauges):
    class Backend:
        name = "redis"

        def stats(self):
            return stats

    class Limiter:
        backend = Backend()

    Metrics(runtime)
    assert not any("ratelimit_store" in name for name, _ in samples(runtime))  # no limiter: no series
    runtime.limiter = Limiter()
    for stat, val in counters.items():
        assert v(runtime, f"clearwall_ratelimit_store_{stat}_total", backend="redis") == val
    for stat, val in gauges.items():
        assert v(runtime, f"clearwall_ratelimit_store_{stat}", backend="redis") == val


def test_a_failing_store_does_not_fail_the_scrape(runtime):
    class Backend:
        name = "redis"

        def stats(self):
            raise ConnectionError("down")

    class Limiter:
        backend = Backend()

    Metrics(runtime)
    runtime.limiter = Limiter()
    assert v(runtime, "clearwall_rules_info", version=runtime.rules.version) == 1
