"""Hot reload through a real `clearwall run`: file changes, SIGHUP, invalid edits, reloads under load."""

from __future__ import annotations

import os
import signal
import threading
import time

import requests

from tests.e2e.helpers import raw_connect, session
from tests.e2e.test_admin import admin, scrape, value, wait_for

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1, aaa.example.test: 127.0.0.1, bbb.example.test: 127.0.0.1}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
  - name: extra
    hosts: [{extra}]
    ports: [{port}]
"""


def rules(pki, upstream, extra="aaa.example.test") -> str:
    return RULES.format(ca=pki.ca_pem, port=upstream.port, extra=extra)


def connect_status(proxy, host, upstream) -> int:
    return raw_connect(proxy.port, f"{host}:{upstream.port}")[0]


def test_a_valid_change_is_in_force_within_two_seconds(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream))
    assert connect_status(proxy, "bbb.example.test", upstream) == 403
    old = admin(proxy, "/rules").json()["version"]
    proxy.rules_path.write_text(rules(pki, upstream, extra="bbb.example.test"))
    written = time.monotonic()
    while connect_status(proxy, "bbb.example.test", upstream) != 200:
        assert time.monotonic() - written < 2.0, "the new rules were not in force within 2 s"
        time.sleep(0.05)
    assert connect_status(proxy, "aaa.example.test", upstream) == 403
    doc = admin(proxy, "/rules").json()
    assert doc["version"] != old and doc["last_reload_error"] is None
    assert value(scrape(proxy), "clearwall_rules_info", version=doc["version"]) == 1
    assert value(scrape(proxy), "clearwall_rules_info", version=old) == 0  # one version in force
    assert value(scrape(proxy), "clearwall_rules_reloads_total", result="ok") >= 1


def test_an_invalid_change_keeps_the_old_rules_is_counted_and_shown(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream))
    version = admin(proxy, "/rules").json()["version"]
    broken = rules(pki, upstream).replace("    ports: [", "    portz: [", 1)
    proxy.rules_path.write_text(broken)
    assert wait_for(lambda: value(scrape(proxy), "clearwall_rules_reloads_total", result="error") == 1)
    doc = admin(proxy, "/rules").json()
    assert doc["version"] == version
    line = broken.splitlines().index("    portz: [{}]".format(upstream.port)) + 1
    assert doc["last_reload_error"].startswith(f"{proxy.rules_path}:{line}:5: unknown key 'portz'")
    assert f"{proxy.rules_path}:{line}:5" in proxy.stderr
    assert connect_status(proxy, "aaa.example.test", upstream) == 200  # old rules still enforced
    assert connect_status(proxy, "bbb.example.test", upstream) == 403
    proxy.rules_path.write_text(rules(pki, upstream, extra="bbb.example.test"))  # fixed: error clears
    assert wait_for(lambda: admin(proxy, "/rules").json()["last_reload_error"] is None)
    assert connect_status(proxy, "bbb.example.test", upstream) == 200


def test_sighup_reloads_a_change_the_watcher_cannot_see(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream))
    st = proxy.rules_path.stat()
    proxy.rules_path.write_text(rules(pki, upstream, extra="bbb.example.test"))  # same size
    os.utime(proxy.rules_path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    time.sleep(2.5)  # two polls: the watcher did not reload
    assert connect_status(proxy, "bbb.example.test", upstream) == 403
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: connect_status(proxy, "bbb.example.test", upstream) == 200)
    assert proxy.proc.poll() is None


def test_a_rules_directory_reloads_when_a_file_is_added(make_proxy, pki, upstream, tmp_path):
    d = tmp_path / "rules.d"
    d.mkdir()
    (d / "10-base.yaml").write_text(rules(pki, upstream))
    from tests.support.proxy import Proxy

    proxy = Proxy(tmp_path / "p", d).start()
    try:
        assert connect_status(proxy, "bbb.example.test", upstream) == 403
        (d / "20-more.yaml").write_text(
            f"version: 1\ndestinations:\n  - name: more\n    hosts: [bbb.example.test]\n    ports: [{upstream.port}]\n")
        assert wait_for(lambda: connect_status(proxy, "bbb.example.test", upstream) == 200)
        (d / "20-more.yaml").unlink()
        assert wait_for(lambda: connect_status(proxy, "bbb.example.test", upstream) == 403)
    finally:
        proxy.stop()


def test_twenty_reloads_under_concurrent_load_lose_no_request(make_proxy, pki, upstream):
    proxy = make_proxy(rules(pki, upstream))
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    failures: list[str] = []

    def client(n: int) -> None:
        s = session(proxy)
        i = 0
        while not stop.is_set():
            i += 1
            try:
                r = s.get(f"https://api.example.test:{upstream.port}/c{n}/{i}", timeout=30)
                results.append((r.status_code, f"/c{n}/{i}"))
            except requests.RequestException as e:
                failures.append(repr(e))

    before = len(upstream.requests)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            version = admin(proxy, "/rules").json()["version"]
            extra = "bbb.example.test" if i % 2 == 0 else "aaa.example.test"
            proxy.rules_path.write_text(rules(pki, upstream, extra=extra))
            assert wait_for(lambda: admin(proxy, "/rules").json()["version"] != version, timeout=15), f"reload {i}"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:5]
    assert results and all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:5]
    got = {r.path for r in upstream.requests[before:]}
    assert all(path in got for _, path in results)  # every answered request reached upstream
    assert value(scrape(proxy), "clearwall_rules_reloads_total", result="ok") >= 20
    assert value(scrape(proxy), "clearwall_rules_reloads_total", result="error") == 0
    # ...and every one of them is in the body log
    logged = {r["url"]["full"].split(str(upstream.port), 1)[1] for r in proxy.wait_records(len(results), 20)
              if "url" in r}
    assert all(path in logged for _, path in results)



def test_a_reload_reaches_requests_in_an_open_keep_alive_tunnel(make_proxy, pki, upstream):
    """Each request is decided by the rules in force: revoking a destination cuts open tunnels."""
    proxy = make_proxy(rules(pki, upstream))
    s = session(proxy)
    url = f"https://aaa.example.test:{upstream.port}/still-open"
    assert s.get(url, timeout=10).status_code == 200
    connections = len(upstream.connections)
    proxy.rules_path.write_text(rules(pki, upstream, extra="bbb.example.test"))  # aaa revoked
    deadline = time.monotonic() + 5
    while True:
        r = s.get(url, timeout=10)  # the same client connection (keep-alive tunnel)
        if r.status_code == 403:
            break
        assert time.monotonic() < deadline, "the revoked destination stayed reachable in the open tunnel"
        time.sleep(0.1)
    assert r.json()["error"] == "destination_denied" and r.json()["rule"] == "default"
    assert len(upstream.connections) == connections  # no new upstream connection was needed to notice
