"""Report mode, fail-closed hooks, and the `mitmdump -s` entry point, through real proxies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import raw_connect, refusal, session, via_curl
from tests.support.proxy import free_port, wait_port

REPORT_RULES = """
version: 1
settings:
  mode: report
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1, other.example.test: 127.0.0.1}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
    paths: ["/v1/**"]
"""


def test_report_mode_forwards_and_logs_would_block(make_proxy, pki, upstream, curl):
    proxy = make_proxy(REPORT_RULES.format(ca=pki.ca_pem, port=upstream.port))
    before = len(upstream.requests)
    status, _, body = via_curl(curl, proxy, f"https://other.example.test:{upstream.port}/anything")
    assert status == 200, body
    status, _, body = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}/v2/off-policy")
    assert status == 200, body
    assert len(upstream.requests) == before + 2
    recs = [r for r in proxy.wait_records(2) if "url" in r]
    assert [r["event"]["action"] for r in recs] == ["would_block", "would_block"]
    assert [r["event"]["reason"] for r in recs] == ["destination_denied", "request_denied"]
    assert recs[0]["rule"]["name"][0] == "default" and recs[1]["rule"]["name"][0] == "api"


def test_per_rule_report_mode_only_waives_that_rule(make_proxy, pki, upstream, curl):
    rules = REPORT_RULES.replace("  mode: report\n", "").replace('paths: ["/v1/**"]', 'paths: ["/v1/**"]\n    mode: report')
    proxy = make_proxy(rules.format(ca=pki.ca_pem, port=upstream.port))
    status, _, _ = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}/v2/x")
    assert status == 200
    status, _, body = raw_connect(proxy.port, f"other.example.test:{upstream.port}")
    assert status == 403 and refusal(body)["rule"] == "default"


@pytest.fixture
def mitmdump():
    path = Path(sys.executable).parent / "mitmdump"
    assert path.exists(), "mitmdump is installed with mitmproxy"
    return str(path)


def test_mitmdump_script_loads_clearwall_and_a_raising_hook_refuses(tmp_path, pki, upstream, mitmdump, curl):
    """The addon list loads with `mitmdump -s`; an exception in a hook refuses (502), never forwards."""
    import clearwall.script

    ca_dir = tmp_path / "ca"
    subprocess.run([sys.executable, "-m", "clearwall", "ca", "init", "--dir", str(ca_dir)], check=True,
                   capture_output=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(REPORT_RULES.replace("  mode: report\n", "").format(ca=pki.ca_pem, port=upstream.port))
    port = free_port()
    fault = Path(__file__).parent / "scripts" / "fault.py"

    def start(*scripts: str) -> subprocess.Popen:
        args = [mitmdump, "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={ca_dir}", "--set", f"clearwall_rules={rules}",
                "--set", f"clearwall_log_dir={tmp_path / 'logs'}"]
        for s in scripts:
            args += ["-s", s]
        p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_port(port, p)
        return p

    class P:
        url = f"http://127.0.0.1:{port}"
        ca_cert = ca_dir / "mitmproxy-ca-cert.pem"

    proc = start(clearwall.script.__file__)
    try:
        status, _, body = via_curl(curl, P, f"https://api.example.test:{upstream.port}/v1/ok")
        assert status == 200, body
        status, _, body = raw_connect(port, f"other.example.test:{upstream.port}")
        assert status == 403 and refusal(body)["rule"] == "default"
    finally:
        proc.terminate()
        proc.wait(10)

    before = len(upstream.requests)
    proc = start(clearwall.script.__file__, str(fault))
    try:
        status, _, body = raw_connect(port, f"api.example.test:{upstream.port}")
        assert status == 502, body  # the CONNECT decision raised: refused, not tunnelled
        assert refusal(body)["error"] == "inspection_error"
        status, _, _ = via_curl(curl, P, f"https://api.example.test:{upstream.port}/v1/ok")
        assert status != 200
        assert len(upstream.requests) == before
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
    assert "injected fault" in out  # the traceback is in Clearwall's own log

    proc = start(clearwall.script.__file__, str(Path(__file__).parent / "scripts" / "fault_responseheaders.py"))
    try:
        status, _, body = via_curl(curl, P, f"https://api.example.test:{upstream.port}/v1/ok")
        assert status == 502 and refusal(body)["error"] == "inspection_error", body  # no upstream bytes
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
    assert "injected fault at response headers" in out


def test_mitmdump_refuses_to_start_when_it_would_generate_its_own_ca(tmp_path, pki, upstream, mitmdump):
    rules = tmp_path / "rules.yaml"
    rules.write_text(REPORT_RULES.format(ca=pki.ca_pem, port=upstream.port))
    import clearwall.script

    out = subprocess.run([mitmdump, "-q", "--listen-port", str(free_port()), "--set", f"confdir={tmp_path / 'empty'}",
                          "--set", f"clearwall_rules={rules}", "-s", clearwall.script.__file__],
                         capture_output=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0
    assert b"generated a new CA" in out.stdout + out.stderr


def test_sigterm_shuts_down_cleanly_and_every_completed_request_has_its_record(make_proxy, pki, upstream, curl):
    proxy = make_proxy(REPORT_RULES.replace("  mode: report\n", "").format(ca=pki.ca_pem, port=upstream.port))
    n = 12
    s = session(proxy)
    connections_before = len(upstream.connections)
    for i in range(n):
        try:
            assert s.get(f"https://api.example.test:{upstream.port}/v1/item/{i}", timeout=10).status_code == 200
        except Exception:
            raise AssertionError(f"request {i} failed; proxy log:\n{proxy.stderr}")
    s.close()
    # One client connection, one upstream connection: pinning the checked address keeps reuse.
    assert len(upstream.connections) - connections_before == 1
    assert proxy.stop() == 0
    urls = [r["url"]["full"] for r in proxy.records() if "url" in r]
    assert sorted(urls) == sorted(f"https://api.example.test:{upstream.port}/v1/item/{i}" for i in range(n))
