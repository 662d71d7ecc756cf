"""Prometheus metrics (SPEC §6): one registry per process, counted from each flow's final state.

`Metrics` runs right before the body log, so it sees what every other addon decided. Label
values are bounded: rule, client and destination NAMES from the rules (or the fixed words
"default", "anonymous", "none"), never raw hosts or paths, so a scanning client cannot blow up
the series count. Log-writer figures and the rules in force are read at scrape time by a
collector, never copied per flow. With the admin endpoint off (`runtime.admin` None) nothing is
exported, so the addon does nothing at all.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left

from mitmproxy import http
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

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
# Rate-limit store stats (ratelimit backends' `stats()`): these only grow; the rest are levels.
_COUNTER_STATS = ("errors", "decisions", "calls", "evicted_idle", "evicted_active")
_STAT = re.compile(r"[a-z][a-z0-9_]{0,40}")


def status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status and 100 <= status < 600 else NONE


class _Histogram:
    """Bucket counts kept as a plain list: observing is one bisect and two additions."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1  # `le` buckets include their bound
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        counts, total = list(self.counts), self.sum  # list() is atomic under the GIL
        cumulative, acc = [], 0
        for bound, n in zip(self.buckets + (float("inf"),), counts):
            acc += n
            cumulative.append((floatToGoString(bound), acc))
        fam = HistogramMetricFamily(name, doc)
        fam.add_metric([], cumulative, sum_value=total)
        return fam


class MetricSet:
    """Every Clearwall metric, on its own registry (tests create as many as they like).

    Flows are counted into plain dicts on the event loop — no locks, a few microseconds per flow
    — and turned into Prometheus families only when /metrics is scraped (in a thread: a dict or
    list copy is atomic under the GIL, so the scrape sees a consistent snapshot of each one).
    """

    def __init__(self, runtime: Runtime, registry: CollectorRegistry | None = None) -> None:
        self.runtime = runtime
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.body_bytes = {"request": 0, "response": 0}
        self.filter_matches: dict[tuple[str, str], int] = {}
        self.rate_limited: dict[tuple[str, str], int] = {}
        self.refused: dict[str, int] = {}
        self.reloads = {"ok": 0, "error": 0}  # present at 0, so alerts on increase() work from the start
        self.request_duration = _Histogram()
        self.upstream_duration = _Histogram()
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def reload(self, result: str) -> None:
        self.reloads[result] = self.reloads.get(result, 0) + 1

    # ----- counting (event loop) ------------------------------------------------------------

    def count(self, flow: http.HTTPFlow, st: FlowState, *, error: bool, now: float | None = None) -> None:
        """Count one finished flow."""
        ident = st.identity
        client = (ident.client if ident else None) or ANONYMOUS
        destination = (st.decision.destination if st.decision else None) or NONE
        action, _ = _action(st, error)
        resp = flow.response
        _inc(self.requests, (client, destination, action, status_class(resp.status_code if resp else None)))
        refusal = st.refusal
        if refusal is not None:
            _inc(self.refused, refusal.kind)
            if refusal.kind == "rate_limited":
                _inc(self.rate_limited, (refusal.rule, client))
        for r in st.would_block:
            if r.kind == "rate_limited":
                _inc(self.rate_limited, (r.rule, client))
        for m in st.matches:
            _inc(self.filter_matches, (m.get("rule", NONE), m.get("action", NONE)))
        req = flow.request
        if req.method == "CONNECT":
            return
        if req.raw_content:
            self.body_bytes["request"] += len(req.raw_content)
        if resp is not None and resp.raw_content and not resp.stream:
            self.body_bytes["response"] += len(resp.raw_content)
        if req.timestamp_start:
            end = (resp.timestamp_end if resp else None) or now or time.time()
            self.request_duration.observe(max(0.0, end - req.timestamp_start))
        refused_early = refusal is not None and refusal.kind not in _RESPONSE_SIDE
        if resp is not None and not refused_early and req.timestamp_end and resp.timestamp_start \
                and flow.server_conn.timestamp_start:
            self.upstream_duration.observe(max(0.0, resp.timestamp_start - req.timestamp_end))

    # ----- scraping (any thread) ------------------------------------------------------------

    def collect(self):
        yield _counter("requests", "HTTP exchanges and refused CONNECTs",
                       ["client", "destination", "action", "status_class"], self.requests)
        yield self.request_duration.family(PREFIX + "request_duration_seconds",
                                           "From the request's first byte to the response's last")
        yield self.upstream_duration.family(PREFIX + "upstream_duration_seconds",
                                            "From the request sent upstream to the upstream response's first byte")
        yield _counter("body_bytes", "Body bytes seen", ["direction"], self.body_bytes)
        yield _counter("filter_matches", "Content-filter matches", ["rule", "action"], self.filter_matches)
        yield _counter("rate_limited", "Requests over a rate limit (refused or, in report mode, would be)",
                       ["rule", "client"], self.rate_limited)
        yield _counter("refused", "Refusals sent, by SPEC §4 kind", ["kind"], self.refused)
        yield _counter("rules_reloads", "Rule reloads", ["result"], self.reloads)
        yield from self._live()

    def _live(self):
        """Figures owned by others (log writer, rules in force), read as they are now."""
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
        rules = self.runtime.rules
        if rules is not None:
            info.add_metric([rules.version], 1)
        yield from (written, errors, depth, writable, info)
        yield from _store_families(self.runtime.limiter)


def _store_families(limiter) -> list:
    """The rate-limit store's own counters (Redis health, fallbacks, keys held), when limits exist."""
    backend = getattr(limiter, "backend", None)
    if backend is None:
        return []
    try:
        stats = dict(backend.stats())
    except Exception:  # a scrape must not fail because the store is mid-reconnect
        return []
    out = []
    for stat, value in sorted(stats.items()):
        if not _STAT.fullmatch(stat):
            continue
        if stat.endswith(_COUNTER_STATS):
            fam = CounterMetricFamily(f"{PREFIX}ratelimit_store_{stat}", f"Rate-limit store: {stat}", labels=["backend"])
        else:
            fam = GaugeMetricFamily(f"{PREFIX}ratelimit_store_{stat}", f"Rate-limit store: {stat}", labels=["backend"])
        fam.add_metric([str(getattr(backend, "name", "unknown"))], value)
        out.append(fam)
    return out


def _inc(d: dict, key) -> None:
    d[key] = d.get(key, 0) + 1


def _counter(name: str, doc: str, labels: list[str], values: dict) -> CounterMetricFamily:
    fam = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for key, v in dict(values).items():  # dict() is atomic under the GIL
        fam.add_metric(list(key) if isinstance(key, tuple) else [key], v)
    return fam


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
