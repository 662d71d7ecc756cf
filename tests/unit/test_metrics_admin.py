"""Admin endpoint and reload helpers, without a proxy: request parsing, tokens, probes, watching."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from clearwall.errors import RuleError, RuleSetError, StartupError
from clearwall.mitm.admin import AdminServer, authorized, parse_head
from clearwall.mitm.metrics import MetricSet
from clearwall.mitm.reload import first_error, snapshot, watched_files
from clearwall.mitm.runtime import Runtime
from clearwall.policy.loader import load_rules


@pytest.mark.parametrize("head, expected", [
    (b"GET /metrics HTTP/1.1\r\nHost: x", ("GET", "/metrics", {"host": "x"})),
    (b"GET /rules?x=1 HTTP/1.0", ("GET", "/rules", {})),
    (b"HEAD /healthz HTTP/1.1\r\nAuthorization: Bearer t", ("HEAD", "/healthz", {"authorization": "Bearer t"})),
])
def test_parse_head_reads_method_path_and_headers(head, expected):
    assert parse_head(head) == expected


@pytest.mark.parametrize("head", [b"GET /metrics", b"GET /metrics HTTP/2", b"GET /m HTTP/1.1\r\nno colon here",
                                  b"\x00\x01"])
def test_parse_head_refuses_malformed_requests(head):
    with pytest.raises(ValueError):
        parse_head(head)


@pytest.mark.parametrize("header, token, ok", [
    (None, None, True),               # no token configured: open
    (None, "s3cret", False),
    ("Bearer s3cret", "s3cret", True),
    ("bearer s3cret", "s3cret", True),
    ("Bearer s3cre", "s3cret", False),
    ("Basic s3cret", "s3cret", False),
    ("Bearer ", "s3cret", False),
])
def test_bearer_token(header, token, ok):
    assert authorized({"authorization": header} if header else {}, token) is ok


@pytest.fixture
def runtime(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("version: 1\ndestinations:\n  - name: api\n    hosts: [api.example.test]\n")
    rt = Runtime(rules=load_rules(p, environ={}), admin=("127.0.0.1", 0))
    rt.metrics = MetricSet(rt)
    return rt


class Writer:
    writable, records_written, write_errors, queue_depth = True, 0, 0, 0


def handle(server: AdminServer, method: str, path: str, headers: dict | None = None):
    return asyncio.run(server.handle(method, path, headers or {}))


@pytest.mark.parametrize("broken, check", [
    ("writer", "log_writable"), ("unwritable", "log_writable"), ("rules", "rules_loaded"), ("ca", "ca_readable"),
])
def test_readyz_names_the_failing_check(runtime, tmp_path, broken, check):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    runtime.writer = Writer()
    server = AdminServer(runtime, "127.0.0.1", 0, ca_cert=ca)
    assert handle(server, "GET", "/readyz")[0] == 200
    if broken == "writer":
        runtime.writer = None
    elif broken == "unwritable":
        runtime.writer.writable = False
    elif broken == "rules":
        runtime.rules = None
    else:
        ca.unlink()
    status, body, _ = handle(server, "GET", "/readyz")
    assert status == 503 and body["checks"][check] is False and body["ready"] is False
    assert handle(server, "GET", "/healthz")[0] == 200


def test_rules_endpoint_shows_version_summary_and_last_error(runtime):
    server = AdminServer(runtime, "127.0.0.1", 0)
    runtime.last_reload_error = "rules.yaml:3:5: unknown key 'portz'"
    status, body, _ = handle(server, "GET", "/rules")
    assert status == 200 and body["version"] == runtime.rules.version
    assert body["summary"]["destinations"] == ["api"] and body["last_reload_error"].endswith("'portz'")


def test_metrics_off_is_404_and_token_applies_to_metrics_and_rules(runtime):
    server = AdminServer(runtime, "127.0.0.1", 0, token="t")
    assert handle(server, "GET", "/metrics")[0] == 401
    assert handle(server, "GET", "/rules")[0] == 401
    assert handle(server, "GET", "/readyz")[0] in (200, 503)
    status, text, ctype = handle(server, "GET", "/metrics", {"authorization": "Bearer t"})
    assert status == 200 and ctype.startswith("text/plain") and b"clearwall_rules_info" in text
    runtime.metrics = None
    assert handle(server, "GET", "/metrics", {"authorization": "Bearer t"})[0] == 404


def test_the_server_answers_real_sockets_and_refuses_an_oversized_head(runtime):
    async def go():
        server = AdminServer(runtime, "127.0.0.1", 0)
        await server.start()
        port = server._server.sockets[0].getsockname()[1]
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            ok = await r.read()
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
            big = await r.read()
        finally:
            await server.stop()
        return ok, big

    ok, big = asyncio.run(go())
    assert ok.startswith(b"HTTP/1.1 200 ") and json.loads(ok.split(b"\r\n\r\n", 1)[1]) == {"status": "ok"}
    assert big.startswith(b"HTTP/1.1 400 ")


def test_watched_files_cover_rule_files_sibling_libraries_and_the_ca_bundle(tmp_path):
    (tmp_path / "patterns").mkdir()
    (tmp_path / "patterns" / "secrets.yaml").write_text("version: 1\nfilters: []\n")
    (tmp_path / "ca.pem").write_text("x")
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nsettings:\n  upstream: {ca_bundle: ca.pem}\n")
    files = watched_files(rules, load_rules(rules, environ={}))
    assert {rules, tmp_path / "patterns" / "secrets.yaml", tmp_path / "ca.pem"} <= set(files)


def test_snapshot_changes_with_content_size_mtime_and_directory_listing(tmp_path):
    d = tmp_path / "rules.d"
    d.mkdir()
    f = d / "a.yaml"
    f.write_text("version: 1\n")
    first = snapshot(watched_files(d, None), d)
    assert snapshot(watched_files(d, None), d) == first
    st = f.stat()
    f.write_text("version: 2\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = snapshot(watched_files(d, None), d)
    assert second != first
    (d / "notes.txt").write_text("not a rule file")
    assert snapshot(watched_files(d, None), d) != second  # the directory listing is part of it


def test_first_error_names_the_first_location_and_counts_the_rest():
    e = RuleSetError([RuleError("r.yaml", 3, 5, "unknown key 'portz'"), RuleError("r.yaml", 9, 1, "x"),
                      RuleError("r.yaml", 10, 1, "y")])
    assert first_error(e) == "r.yaml:3:5: unknown key 'portz' (and 2 more errors)"
    assert first_error(StartupError("upstream.ca_bundle c.pem cannot be read")) == "upstream.ca_bundle c.pem cannot be read"


def test_reload_swaps_rules_refreshes_the_upstream_bundle_and_keeps_rules_on_error(tmp_path, pki):
    from mitmproxy.test import taddons

    from clearwall.mitm.core import Core
    from clearwall.mitm.reload import Reload

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndestinations:\n  - name: a\n    hosts: [a.example.test]\n")
    rt = Runtime(admin=("127.0.0.1", 0))
    rt.metrics = MetricSet(rt)
    core, reload = Core(rt), Reload(rt)
    from mitmproxy.addons import proxyserver, tlsconfig

    # proxyserver and tlsconfig register the mitmproxy options Core sets.
    with taddons.context(proxyserver.Proxyserver(), tlsconfig.TlsConfig(), core, reload) as tctx:
        tctx.configure(core, clearwall_rules=str(rules))
        first = rt.rules
        rules.write_text("version: 1\nsettings:\n  upstream: {ca_bundle: %s}\n"
                         "destinations:\n  - name: b\n    hosts: [b.example.test]\n" % pki.ca_pem)
        assert asyncio.run(reload._reload("test")) is True
        assert rt.rules is not first and [d.name for d in rt.rules.destinations] == ["b"]
        bundle = tctx.options.ssl_verify_upstream_trusted_ca
        assert bundle and "BEGIN CERTIFICATE" in open(bundle).read()
        second = rt.rules
        rules.write_text("version: 1\ndestinations:\n  - name: c\n    hostz: [c.example.test]\n")
        assert asyncio.run(reload._reload("test")) is False
        assert rt.rules is second
        assert rt.last_reload_error.startswith(f"{rules}:3:5: missing required key 'hosts' (and 1 more error)")
        assert rt.metrics.reloads == {"ok": 1, "error": 1}


def test_a_changed_ca_bundle_with_unchanged_rules_gets_a_new_trust_file(tmp_path, pki):
    from mitmproxy.addons import proxyserver, tlsconfig
    from mitmproxy.test import taddons

    from clearwall.mitm.core import Core
    from clearwall.mitm.reload import Reload

    bundle = tmp_path / "internal-ca.pem"
    bundle.write_text(open(pki.ca_pem).read())
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"version: 1\nsettings:\n  upstream: {{ca_bundle: {bundle}}}\n")
    rt = Runtime(admin=("127.0.0.1", 0))
    core, reload = Core(rt), Reload(rt)
    with taddons.context(proxyserver.Proxyserver(), tlsconfig.TlsConfig(), core, reload) as tctx:
        tctx.configure(core, clearwall_rules=str(rules))
        assert asyncio.run(reload._reload("test")) is True
        first = tctx.options.ssl_verify_upstream_trusted_ca
        bundle.write_text(open(pki.ca_pem).read() + "\n" + open(pki.cert_pem).read())  # same rules text
        assert asyncio.run(reload._reload("test")) is True
        second = tctx.options.ssl_verify_upstream_trusted_ca
        assert second != first and open(pki.cert_pem).read().strip() in open(second).read()
        assert open(first).read() != open(second).read()


def test_a_reload_compiles_the_new_filters_before_the_swap_off_the_event_loop(tmp_path, monkeypatch):
    import threading

    from mitmproxy.addons import proxyserver, tlsconfig
    from mitmproxy.test import taddons

    from clearwall.mitm import content
    from clearwall.mitm.core import Core
    from clearwall.mitm.reload import Reload

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\n")
    rt = Runtime(admin=("127.0.0.1", 0))
    core, reload = Core(rt), Reload(rt)
    built_in: list[str] = []
    real = content.scanner_for

    def scanner_for(r):
        built_in.append(threading.current_thread().name)
        return real(r)

    monkeypatch.setattr(content, "scanner_for", scanner_for)
    with taddons.context(proxyserver.Proxyserver(), tlsconfig.TlsConfig(), core, reload) as tctx:
        tctx.configure(core, clearwall_rules=str(rules))
        rules.write_text("version: 1\nfilters:\n  - name: k\n    pattern: 'sk-[a-z]{8}'\n    action: block\n")
        assert asyncio.run(reload._reload("test")) is True
        assert built_in and built_in[0] != threading.main_thread().name
        assert content._SCANNERS[rt.rules.fingerprint] is content.scanner(rt.rules)
        assert len(built_in) == 1  # the first flow under the new rules compiles nothing
