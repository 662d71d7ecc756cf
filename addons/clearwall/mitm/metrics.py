"""Prometheus metrics (SPEC §6): one registry per process, counted from each flow's final state.

`Metrics` runs right before the body log, so it sees what every other addon decided. Label
values are bounded: rule, client and destination NAMES from the rules (or the fixed words
"default", "anonymous", "none"), never raw hosts or paths, so a scanning client cannot blow up
the series count. Log-writer figures and the rules in force are read at scrape time by a
collector, never copied per flow. With the admin endpoint off (`runtime.admin` None) nothing is
exported, so the addon does nothing at all.
"""

from __future__ import annotations

import time

from mitmproxy import http
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from clearwall.mitm.bodylog import _action
from clearwall.mitm.guard import guarded
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import FlowState, flow_state

PREFIX = "clearwall_"
COUNTED = "clearwall.metrics.counted"  # flow.metadata key: a flow is counted once
ANONYMOUS, NONE = "anonymous", "none"
# Latency buckets (seconds): proxy overhead is milliseconds, LLM/MCP upstreams take many seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Refusals decided before any upstream exchange: such a flow has no upstream duration.
_RESPONSE_SIDE = {"response_blocked", "response_too_large"}
# `*_created` series double the series count and no dashboard or alert reads them.
prometheus_client.disable_created_metrics()


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status and 100 <= status < 600 else NONE


class _LiveCollector(Collector):
    """Figures owned by others (log writer, rules in force), read when Prometheus scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self):
        w = self.runtime.writer
        written = CounterMetricFamily(PREFIX + "log_records", "Body-log records written")
        errors = CounterMetricFamily(PREFIX + "log_write_errors", "Failed body-log writes (each retried)")
        depth = GaugeMetricFamily(PREFIX + "log_queue_depth", "Body-log records waiting to be written")
        writable = GaugeMetricFamily(PREFIX + "log_writable", "1 when the body log can be written")
        written.add_metric([], w.records_written if w else 0)
        errors.add_metric([], w.write_errors if w else 0)
        depth.add_metric([], w.queue_depth if w else 0)
        writable.add_metric([], 1 if w is not None and w.writable else 0)
        info = GaugeMetricFamily(PREFIX + "rules_info", "The rules in force (value 1)", labels=["version"])
        if self.runtime.rules is not None:
            info.add_metric([self.runtime.rules.version], 1)
        yield from (written, errors, depth, writable, info)


class MetricSet:
    """Every Clearwall metric, on its own registry (tests create as many as they like)."""

    def __init__(self, runtime: Runtime, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(PREFIX + "requests", "HTTP exchanges and refused CONNECTs",
                                ["client", "destination", "action", "status_class"], registry=r)
        self.request_duration = Histogram(PREFIX + "request_duration_seconds",
                                          "From the request's first byte to the response's last",
                                          buckets=BUCKETS, registry=r)
        self.upstream_duration = Histogram(PREFIX + "upstream_duration_seconds",
                                           "From the request sent upstream to the upstream response's first byte",
                                           buckets=BUCKETS, registry=r)
        self.body_bytes = Counter(PREFIX + "body_bytes", "Body bytes seen", ["direction"], registry=r)
        self.filter_matches = Counter(PREFIX + "filter_matches", "Content-filter matches",
                                      ["rule", "action"], registry=r)
        self.rate_limited = Counter(PREFIX + "rate_limited", "Requests over a rate limit (refused or, in report mode, would be)",
                                    ["rule", "client"], registry=r)
        self.refused = Counter(PREFIX + "refused", "Refusals sent, by SPEC §4 kind", ["kind"], registry=r)
        self.reloads = Counter(PREFIX + "rules_reloads", "Rule reloads", ["result"], registry=r)
        for result in ("ok", "error"):
            self.reloads.labels(result=result)  # present at 0, so alerts on increase() work from the start
        r.register(_LiveCollector(runtime))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def count(self, flow: http.HTTPFlow, st: FlowState, *, error: bool, now: float | None = None) -> None:
        """Count one finished flow."""
        ident = st.identity
        client = (ident.client if ident else None) or ANONYMOUS
        destination = (st.decision.destination if st.decision else None) or NONE
        action, _ = _action(st, error)
        resp = flow.response
        self.requests.labels(client, destination, action, status_class(resp.status_code if resp else None)).inc()
        if st.refusal is not None:
            self.refused.labels(st.refusal.kind).inc()
        for r in ((st.refusal,) if st.refusal else ()) + tuple(st.would_block):
            if r.kind == "rate_limited":
                self.rate_limited.labels(r.rule, client).inc()
        for m in st.matches:
            self.filter_matches.labels(m.get("rule", NONE), m.get("action", NONE)).inc()
        req = flow.request
        if req.method == "CONNECT":
            return
        if req.raw_content:
            self.body_bytes.labels("request").inc(len(req.raw_content))
        if resp is not None and resp.raw_content and not resp.stream:
            self.body_bytes.labels("response").inc(len(resp.raw_content))
        if req.timestamp_start:
            end = (resp.timestamp_end if resp else None) or now or time.time()
            self.request_duration.observe(max(0.0, end - req.timestamp_start))
        refused_early = st.refusal is not None and st.refusal.kind not in _RESPONSE_SIDE
        if resp is not None and not refused_early and req.timestamp_end and resp.timestamp_start \
                and flow.server_conn.timestamp_start:
            self.upstream_duration.observe(max(0.0, resp.timestamp_start - req.timestamp_end))


class Metrics:
    """The addon: counts each flow once, in whichever of its final hooks comes first."""

    name = "clearwall-metrics"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if runtime.admin is not None and runtime.metrics is None:
            runtime.metrics = MetricSet(runtime)

    def _count(self, flow: http.HTTPFlow, error: bool) -> None:
        m = self.runtime.metrics
        if m is None or flow.metadata.get(COUNTED):
            return
        flow.metadata[COUNTED] = True
        m.count(flow, flow_state(flow), error=error)

    @guarded
    def response(self, flow: http.HTTPFlow) -> None:
        if flow.request.method != "CONNECT":
            self._count(flow, error=False)

    @guarded
    def error(self, flow: http.HTTPFlow) -> None:
        if flow.websocket is None and flow.request.method != "CONNECT":
            self._count(flow, error=True)

    @guarded
    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        self._count(flow, error=False)
