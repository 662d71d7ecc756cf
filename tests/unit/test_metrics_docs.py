"""The shipped Grafana dashboard and Prometheus alerts read only metrics Clearwall exports,
and the alerts fire on the situations they are named after (promtool unit tests)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mitmproxy.test import tflow

from clearwall.mitm.metrics import MetricSet
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.clients import Identity
from clearwall.policy.decision import Decision, Refusal

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
ALERTS = DOCS / "prometheus-alerts.yaml"
METRIC = re.compile(r"\bclearwall_[a-z_]+\b")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    rt = Runtime(admin=("127.0.0.1", 0))
    m = MetricSet(rt)
    # Count one flow that touches every labelled metric, so each has samples.
    f = tflow.tflow(resp=True)
    st = flow_state(f)
    st.identity, st.decision = Identity("c"), Decision(None, "d")
    st.refusal = Refusal("rate_limited", "r", "m")
    st.matches = [{"rule": "f", "where": "request.body", "action": "alert"}]
    m.count(f, st, error=False)

    class Redis:  # the shape of ratelimit.redis_backend's stats()
        name = "redis"

        def stats(self):
            return {"healthy": 1, "backend_errors": 0, "fallback_decisions": 0, "slow_calls": 0, "local_keys": 0}

    rt.limiter = type("Limiter", (), {"backend": Redis()})()
    text = m.text().decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names |= {s.name for s in fam.samples}
    return names | {"clearwall_rules_info"}  # present once rules are loaded


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in doc["annotations"]["list"] if "expr" in a]
    return exprs


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_dashboard_is_importable_json_with_unique_ids_on_a_24_column_grid():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] == "Clearwall"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["targets"], p["title"]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_named_is_one_clearwall_exports(exported, source):
    exprs = dashboard_exprs() if source == "dashboard" else [r["expr"] for r in alert_rules()]
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used, "no metric found"
    assert used <= exported, f"not exported: {sorted(used - exported)}"


@pytest.mark.parametrize("metric", ["clearwall_requests_total", "clearwall_request_duration_seconds_bucket",
                                    "clearwall_upstream_duration_seconds_bucket", "clearwall_refused_total",
                                    "clearwall_rate_limited_total", "clearwall_filter_matches_total",
                                    "clearwall_rules_reloads_total", "clearwall_log_write_errors_total",
                                    "clearwall_rules_info", "clearwall_body_bytes_total", "clearwall_log_queue_depth",
                                    "clearwall_log_records_total"])
def test_the_dashboard_shows_every_spec_metric(metric):
    assert any(metric in e for e in dashboard_exprs())


def test_alerts_cover_errors_latency_spikes_reloads_and_the_log():
    names = {r["alert"] for r in alert_rules()}
    assert {"ClearwallErrorRateHigh", "ClearwallLatencyP99High", "ClearwallBlockSpike", "ClearwallRateLimitSpike",
            "ClearwallRulesReloadFailed", "ClearwallLogWriteErrors"} <= names
    for r in alert_rules():
        assert r["annotations"]["summary"] and r["labels"]["severity"] in ("warning", "critical")


@pytest.fixture(scope="module")
def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`); structural checks above still ran")
    return path


def test_promtool_accepts_the_alert_rules(promtool):
    out = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_parses_every_dashboard_query(promtool, tmp_path):
    rules = [{"record": f"clearwall:dashboard_{i}",
              "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*")}
             for i, e in enumerate(dashboard_exprs())]
    f = tmp_path / "dashboard-as-rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


PROMTOOL_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'clearwall_requests_total{{action="allowed", instance="p"}}'
        values: '0+90x30'
      - series: 'clearwall_requests_total{{action="error", instance="p"}}'
        values: '0+10x30'
      - series: 'clearwall_rules_reloads_total{{result="error", instance="p"}}'
        values: '0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1'
      - series: 'clearwall_log_write_errors_total{{instance="p"}}'
        values: '0 0 0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'clearwall_request_duration_seconds_bucket{{le="1.0", instance="p"}}'
        values: '0+100x30'
      - series: 'clearwall_request_duration_seconds_bucket{{le="10.0", instance="p"}}'
        values: '0+110x30'
      - series: 'clearwall_request_duration_seconds_bucket{{le="+Inf", instance="p"}}'
        values: '0+110x30'
      - series: 'clearwall_requests_total{{action="blocked", instance="p"}}'
        values: '0+1x60 60+300x15'
      - series: 'clearwall_ratelimit_store_healthy{{backend="redis", instance="p"}}'
        values: '1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 12m
        alertname: ClearwallErrorRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning}}
      - eval_time: 5m
        alertname: ClearwallRulesReloadFailed
        exp_alerts:
          - exp_labels: {{severity: warning, instance: p, result: error}}
      - eval_time: 2m
        alertname: ClearwallRulesReloadFailed
        exp_alerts: []
      - eval_time: 7m
        alertname: ClearwallLogWriteErrors
        exp_alerts:
          - exp_labels: {{severity: critical, instance: p}}
      - eval_time: 15m
        alertname: ClearwallLatencyP99High
        exp_alerts:
          - exp_labels: {{severity: warning}}
      - eval_time: 5m
        alertname: ClearwallRateLimitStoreDown
        exp_alerts: []
      - eval_time: 7m
        alertname: ClearwallRateLimitStoreDown
        exp_alerts:
          - exp_labels: {{severity: warning, instance: p}}
      - eval_time: 50m
        alertname: ClearwallBlockSpike
        exp_alerts: []
      - eval_time: 72m
        alertname: ClearwallBlockSpike
        exp_alerts:
          - exp_labels: {{severity: warning}}
"""


def test_alerts_fire_on_the_situations_they_name_and_not_before(promtool, tmp_path):
    # The logic under test is the expressions and `for:`; annotations (templated text) are dropped.
    doc = yaml.safe_load(ALERTS.read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    stripped = tmp_path / "alerts.yaml"
    stripped.write_text(yaml.safe_dump(doc))
    f = tmp_path / "alerts.test.yaml"
    f.write_text(textwrap.dedent(PROMTOOL_TESTS.format(alerts=stripped)))
    out = subprocess.run([promtool, "test", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
