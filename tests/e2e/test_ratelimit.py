"""Rate limits through the real `clearwall run`, with real clients, and a real redis-server.

Timing: a `5 per 1m, burst 0` bucket refills one token every 12 s, so a test that sends its
requests within a few seconds sees exactly 5 admitted whatever the machine's load; no test
asserts a duration tighter than that.
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.e2e.helpers import refusal, session, via_curl
from tests.support.redis_server import RedisServer, require_redis_server

BASE = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1, other.example.test: 127.0.0.1}}
{settings}
clients:
  - name: alpha
    match: {{proxy_user: alpha, token_env: TEST_ALPHA_TOKEN}}
  - name: beta
    match: {{proxy_user: beta, token_env: TEST_BETA_TOKEN}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
{api_extra}
  - name: other
    hosts: [other.example.test]
    ports: [{port}]
{rate_limits}
"""
TOKENS = {"TEST_ALPHA_TOKEN": "alpha-secret", "TEST_BETA_TOKEN": "beta-secret"}
FIVE_PER_MINUTE = "    rate_limit: {requests: 5, per: 1m, burst: 0, key: client}"


def rules(pki, upstream, *, settings: str = "", api_extra: str = FIVE_PER_MINUTE, rate_limits: str = "") -> str:
    return BASE.format(ca=pki.ca_pem, port=upstream.port, settings=settings, api_extra=api_extra,
                       rate_limits=rate_limits)


def api(upstream, path: str = "/v1/x") -> str:
    return f"https://api.example.test:{upstream.port}{path}"


def metric(proxy, name: str, **labels: str) -> float:
    """One sample from the proxy's /metrics (0 when absent)."""
    text = requests.get(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and ",".join(sorted(head[len(name) + 1:-1].split(","))) == want:
            return float(value)
    return 0.0


def _check_429(r, *, rule: str, quota: int, window: int, max_wait: int) -> int:
    """The SPEC §4 refusal: 429, Retry-After, RateLimit-Policy/RateLimit, JSON body; returns Retry-After."""
    assert r.status_code == 429, r.text
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= max_wait
    # The refusing limit comes first; other enforced limits that matched follow it.
    assert r.headers["RateLimit-Policy"].split(", ")[0] == f'"{rule}";q={quota};w={window}'
    assert r.headers["RateLimit"].split(", ")[0] == f'"{rule}";r=0;t={retry}'
    doc = refusal(r.content)
    assert doc["error"] == "rate_limited" and doc["rule"] == rule
    assert doc["id"] == r.headers["X-Clearwall-Id"] and r.headers["X-Clearwall-Rule"] == rule
    assert f"retry in {retry} s" in doc["message"]
    return retry


def test_five_per_minute_admits_exactly_five_and_refuses_the_sixth_with_429(make_proxy, pki, upstream, curl):
    proxy = make_proxy(rules(pki, upstream), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    before = len(upstream.requests)
    admitted = [s.get(api(upstream, f"/v1/item/{i}"), timeout=20) for i in range(5)]
    assert [r.status_code for r in admitted] == [200] * 5
    # Admitted responses advertise the enforced limit, counting down.
    assert [r.headers["RateLimit"].split(";")[1] for r in admitted] == ["r=4", "r=3", "r=2", "r=1", "r=0"]
    assert all(r.headers["RateLimit-Policy"] == '"api";q=5;w=60' for r in admitted)
    assert "Retry-After" not in admitted[0].headers

    sixth = s.get(api(upstream, "/v1/item/5"), timeout=20)
    retry = _check_429(sixth, rule="api", quota=5, window=60, max_wait=12)
    assert sixth.headers["RateLimit"] == f'"api";r=0;t={retry}'  # the only limit
    assert retry >= 6  # one token every 12 s; the five went through moments ago
    assert len(upstream.requests) == before + 5
    assert not upstream.received("/v1/item/5")

    rec = proxy.record_for(sixth.headers["X-Clearwall-Id"])
    assert rec["event"]["action"] == "rate_limited"
    assert rec["event"]["reason"] == "rate_limited"
    assert rec["rule"]["name"][0] == "api"
    assert rec["http"]["response"]["status_code"] == 429
    assert metric(proxy, "clearwall_rate_limited_total", rule="api", client="alpha") == 1

    # Another real client, same identity, same bucket: curl is refused too.
    status, headers, body = via_curl(curl, proxy, api(upstream, "/v1/curl"), "-U", "alpha:alpha-secret")
    assert status == 429 and refusal(body)["error"] == "rate_limited"
    assert 1 <= int(headers["retry-after"]) <= 12
    assert not upstream.received("/v1/curl")


def test_each_client_has_its_own_bucket_and_scoped_limits_apply_only_where_named(make_proxy, pki, upstream):
    limits = """rate_limits:
  - name: beta-on-api
    key: client
    requests: 2
    per: 1m
    clients: [beta]
    destinations: [api]
"""
    proxy = make_proxy(rules(pki, upstream, rate_limits=limits), env=TOKENS)
    alpha, beta = session(proxy, "alpha", "alpha-secret"), session(proxy, "beta", "beta-secret")
    assert [alpha.get(api(upstream), timeout=20).status_code for _ in range(5)] == [200] * 5
    assert alpha.get(api(upstream), timeout=20).status_code == 429
    # beta's own buckets are untouched by alpha's; its tighter scoped limit refuses first.
    got = [beta.get(api(upstream), timeout=20) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    _check_429(got[2], rule="beta-on-api", quota=2, window=60, max_wait=30)
    # Both enforced limits are advertised, the refusing one first.
    assert got[2].headers["RateLimit-Policy"] == '"beta-on-api";q=2;w=60, "api";q=5;w=60'
    assert got[2].headers["RateLimit"].startswith('"beta-on-api";r=0;')
    assert ', "api";r=3;' in got[2].headers["RateLimit"]  # refused: api's bucket was not consumed
    # A destination no limit names is not limited for anyone.
    other = f"https://other.example.test:{upstream.port}/free"
    assert [beta.get(other, timeout=20).status_code for _ in range(4)] == [200] * 4
    assert "RateLimit" not in beta.get(other, timeout=20).headers


def test_report_mode_counts_and_forwards_and_logs_would_block(make_proxy, pki, upstream):
    limits = """rate_limits:
  - name: rollout
    key: source_ip
    requests: 2
    per: 1m
    mode: report
"""
    proxy = make_proxy(rules(pki, upstream, api_extra="", rate_limits=limits), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    before = len(upstream.requests)
    got = [s.get(api(upstream, f"/v1/report/{i}"), timeout=20) for i in range(4)]
    assert [r.status_code for r in got] == [200] * 4
    assert len(upstream.requests) == before + 4
    assert all("RateLimit" not in r.headers for r in got)  # report-mode limits are not advertised
    recs = {r["url"]["full"]: r for r in proxy.wait_records(4) if "url" in r}
    actions = [recs[api(upstream, f"/v1/report/{i}")]["event"]["action"] for i in range(4)]
    assert actions == ["allowed", "allowed", "would_block", "would_block"]
    third = recs[api(upstream, "/v1/report/2")]
    assert third["event"]["reason"] == "rate_limited"
    assert "rollout" in third["rule"]["name"]
    assert third["http"]["response"]["status_code"] == 200
    assert metric(proxy, "clearwall_rate_limited_total", rule="rollout", client="alpha") == 2


def test_global_report_mode_applies_to_a_destination_limit_too(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream, settings="  mode: report"), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    assert [s.get(api(upstream), timeout=20).status_code for _ in range(7)] == [200] * 7


def test_a_destination_key_is_one_budget_for_every_client_and_plain_http_counts_too(make_proxy, pki, upstream,
                                                                                     plain_upstream):
    plain = f"""  - name: plain-api
    hosts: [api.example.test]
    ports: [{plain_upstream.port}]
rate_limits:
  - name: api-total
    key: destination
    requests: 3
    per: 1m
    destinations: [api, plain-api]
"""
    proxy = make_proxy(rules(pki, upstream, api_extra="", rate_limits=plain), env=TOKENS)
    alpha, beta = session(proxy, "alpha", "alpha-secret"), session(proxy, "beta", "beta-secret")
    statuses = [alpha.get(api(upstream), timeout=20).status_code for _ in range(2)]
    statuses += [beta.get(api(upstream), timeout=20).status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]
    assert alpha.get(api(upstream), timeout=20).status_code == 429
    # The plain-HTTP destination is another destination: its own bucket under the same limit.
    plain_url = f"http://api.example.test:{plain_upstream.port}/p"
    got = [alpha.get(plain_url, timeout=20) for _ in range(4)]
    assert [r.status_code for r in got] == [200, 200, 200, 429]
    assert refusal(got[3].content)["rule"] == "api-total"


# --- Redis: one budget shared by replicas, and what happens while it is down ------------------


@pytest.fixture
def redis():
    require_redis_server()
    with RedisServer() as server:
        yield server


def redis_settings(server: RedisServer, policy: str) -> str:
    return f"  rate_limit_backend: {server.url}\n  rate_limit_on_backend_error: {policy}"


def test_two_proxies_sharing_one_redis_share_one_budget(make_proxy, pki, upstream, redis):
    text = rules(pki, upstream, settings=redis_settings(redis, "deny"))
    a, b = make_proxy(text, env=TOKENS), make_proxy(text, env=TOKENS)
    sa, sb = session(a, "alpha", "alpha-secret"), session(b, "alpha", "alpha-secret")
    statuses = [sa.get(api(upstream), timeout=20).status_code for _ in range(3)]
    statuses += [sb.get(api(upstream), timeout=20).status_code for _ in range(2)]
    assert statuses == [200] * 5
    for s in (sa, sb):  # the budget is spent for both replicas
        _check_429(s.get(api(upstream), timeout=20), rule="api", quota=5, window=60, max_wait=12)


def _wait_for(condition, what: str, timeout: float = 40.0) -> None:
    """The store's recovery probe backs off up to seconds between tries: wait generously."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


OUTAGE = [
    # (case, policy, statuses of 7 requests while Redis is down)
    ("deny refuses every limited request with inspection_error", "deny", [502] * 7),
    ("local enforces the limit with the replica's own buckets", "local", [200] * 5 + [429] * 2),
    ("allow forwards limited requests without limiting", "allow", [200] * 7),
]


@pytest.mark.parametrize("case,policy,down", OUTAGE, ids=[o[0] for o in OUTAGE])
def test_redis_outage_follows_the_backend_error_policy_and_recovers(make_proxy, pki, upstream, redis, case, policy, down):
    proxy = make_proxy(rules(pki, upstream, settings=redis_settings(redis, policy)), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    assert [s.get(api(upstream), timeout=20).status_code for _ in range(2)] == [200, 200]

    redis.stop()
    before = len(upstream.requests)
    got = [s.get(api(upstream, f"/v1/outage/{policy}/{i}"), timeout=20) for i in range(7)]
    assert [r.status_code for r in got] == down
    assert len(upstream.requests) - before == down.count(200)
    if policy == "deny":
        doc = refusal(got[0].content)
        assert doc["error"] == "inspection_error" and doc["rule"] == "api"
        assert "could not be checked" in doc["message"]
        rec = proxy.record_for(got[0].headers["X-Clearwall-Id"])
        assert rec["event"]["action"] == "error"
    # Requests no limit matches are unaffected whatever the policy.
    assert s.get(f"https://other.example.test:{upstream.port}/free", timeout=20).status_code == 200

    redis.start()  # same port, empty (no persistence): the shared bucket starts full again
    _wait_for(lambda: "shared budgets resume" in proxy.stderr, "the store's recovery probe to find Redis")
    # Back on Redis: the fresh shared bucket admits exactly 5, then refuses.
    after = [s.get(api(upstream), timeout=20).status_code for _ in range(6)]
    assert after == [200] * 5 + [429]


def _reload(proxy, text: str, count: int) -> None:
    """Rewrite the rules, ask for a reload (SIGHUP) and wait until the proxy says it is done."""
    import signal

    proxy.rules_path.write_text(text)
    proxy.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: proxy.stderr.count("rules reloaded") >= count, f"reload {count}")


def test_a_reload_keeps_unchanged_limits_buckets_and_restarts_changed_ones(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    assert [s.get(api(upstream), timeout=20).status_code for _ in range(6)] == [200] * 5 + [429]

    # An unrelated change (a new global limit elsewhere): the api bucket stays empty, the new one applies.
    other_limit = "rate_limits:\n  - name: other-cap\n    requests: 1\n    per: 1h\n    destinations: [other]\n"
    _reload(proxy, rules(pki, upstream, rate_limits=other_limit), 1)
    assert s.get(api(upstream), timeout=20).status_code == 429
    other = f"https://other.example.test:{upstream.port}/o"
    assert [s.get(other, timeout=20).status_code for _ in range(2)] == [200, 429]

    # The api limit's numbers change: it starts again from a full bucket; other-cap keeps its state.
    _reload(proxy, rules(pki, upstream, api_extra=FIVE_PER_MINUTE.replace("requests: 5", "requests: 6"),
                         rate_limits=other_limit), 2)
    assert [s.get(api(upstream), timeout=20).status_code for _ in range(7)] == [200] * 6 + [429]
    assert s.get(other, timeout=20).status_code == 429


def test_an_unusable_rate_limit_backend_stops_start_up_with_one_clear_sentence(tmp_path, pki, upstream):
    import subprocess

    from tests.support.proxy import Proxy

    proxy = Proxy(tmp_path / "bad", rules(pki, upstream, settings="  rate_limit_backend: 'redis://'"), env=TOKENS)
    out = subprocess.run(proxy.command(), cwd=proxy.workdir, env=proxy.env, capture_output=True, timeout=60)
    assert out.returncode == 1
    # Caught while loading the rules, so it names the file and line like every rule error.
    assert b"rules.yaml:8:3: settings.rate_limit_backend: rate_limit_backend must be 'memory' or a redis:// URL" in out.stderr
    assert b"Traceback" not in out.stderr


def test_moving_a_limit_from_report_to_enforce_keeps_the_counts_of_the_rollout(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream, api_extra=FIVE_PER_MINUTE + "\n    mode: report"), env=TOKENS)
    s = session(proxy, "alpha", "alpha-secret")
    assert [s.get(api(upstream), timeout=20).status_code for _ in range(7)] == [200] * 7
    _reload(proxy, rules(pki, upstream), 1)  # same limit, now enforced: its bucket is already empty
    _check_429(s.get(api(upstream), timeout=20), rule="api", quota=5, window=60, max_wait=12)


# --- The addon in-process (mitmproxy's test context): failures refuse, the store is closed ----


class _Store:
    """A bucket store that decides with fresh buckets, or raises, and remembers being closed."""

    name = "test"

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.closed, self.calls = fail, False, 0

    async def acquire(self, checks):
        from clearwall.ratelimit import MemoryBackend

        self.calls += 1
        if self.fail:
            raise RuntimeError("store bug")
        return await MemoryBackend().acquire(checks)

    def retain(self, bucket_ids) -> None:
        pass

    def stats(self) -> dict:
        return {}

    async def aclose(self) -> None:
        self.closed = True


def _in_process(tmp_path, text: str, store_factory):
    from clearwall.mitm.ratelimit import RateLimits
    from clearwall.mitm.runtime import Runtime
    from clearwall.policy.loader import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text(text)
    runtime = Runtime(rules=load_rules(path, environ={}))
    return runtime, RateLimits(runtime, backend_factory=store_factory)


def _flow(destination: str | None = "api"):
    from mitmproxy.test import tflow

    from clearwall.mitm.state import flow_state
    from clearwall.policy.clients import Identity
    from clearwall.policy.decision import Decision

    f = tflow.tflow()
    st = flow_state(f)
    st.identity, st.decision = Identity("alpha"), Decision(None, destination)
    return f


IN_PROCESS_RULES = """
version: 1
destinations:
  - name: api
    hosts: [api.example.test]
    rate_limit: {requests: 5, per: 1m}
  - name: free
    hosts: [free.example.test]
"""


def test_a_failing_store_refuses_with_inspection_error_never_forwards(tmp_path):
    import asyncio

    from mitmproxy.test import taddons

    store = _Store(fail=True)
    _, addon = _in_process(tmp_path, IN_PROCESS_RULES, lambda *a, **k: store)
    with taddons.context(addon):
        f = _flow()
        asyncio.run(addon.requestheaders(f))
    assert store.calls == 1
    assert f.response.status_code == 502
    assert refusal(f.response.content)["error"] == "inspection_error"
    assert "Retry-After" not in f.response.headers


def test_a_bug_in_the_addon_refuses_through_the_guard(tmp_path):
    import asyncio

    from mitmproxy.test import taddons

    def broken_factory(*a, **k):
        raise RuntimeError("factory bug")

    _, addon = _in_process(tmp_path, IN_PROCESS_RULES, broken_factory)
    with taddons.context(addon):
        f = _flow()
        asyncio.run(addon.requestheaders(f))
    assert f.response.status_code == 502 and refusal(f.response.content)["error"] == "inspection_error"


def test_no_store_is_made_without_limits_and_unlimited_destinations_are_not_counted(tmp_path):
    import asyncio

    from mitmproxy.test import taddons

    made: list[_Store] = []

    def factory(*a, **k):
        made.append(_Store())
        return made[-1]

    runtime, addon = _in_process(tmp_path, "version: 1\ndestinations:\n  - {name: a, hosts: [a.test]}\n", factory)
    with taddons.context(addon):
        f = _flow("a")
        asyncio.run(addon.requestheaders(f))
        assert f.response is None and made == [] and runtime.limiter is None

        runtime.rules = _in_process(tmp_path, IN_PROCESS_RULES, factory)[0].rules  # a reload adds limits
        f = _flow("free")
        asyncio.run(addon.requestheaders(f))
        assert f.response is None and len(made) == 1 and made[0].calls == 0
        f = _flow("api")
        asyncio.run(addon.requestheaders(f))
        assert f.response is None and made[0].calls == 1


def test_done_closes_the_store_and_a_new_store_setting_closes_the_old_one(tmp_path):
    import asyncio

    from mitmproxy.test import taddons

    made: list[_Store] = []

    def factory(*a, **k):
        made.append(_Store())
        return made[-1]

    runtime, addon = _in_process(tmp_path, IN_PROCESS_RULES, factory)

    async def scenario():
        await addon.requestheaders(_flow())
        moved = IN_PROCESS_RULES.replace("version: 1\n", "version: 1\nsettings: {rate_limit_on_backend_error: deny}\n")
        runtime.rules = _in_process(tmp_path, moved, factory)[0].rules
        await addon.requestheaders(_flow())
        await asyncio.sleep(0)  # the old store closes in the background
        assert len(made) == 2 and made[0].closed and not made[1].closed
        await addon.done()  # mitmproxy awaits what `done` returns at shutdown
        assert made[1].closed and runtime.limiter is None

    with taddons.context(addon):
        asyncio.run(scenario())
