"""Bad input at start-up: one clear sentence, exit 1, no traceback — and nothing listening."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proxy import free_port

GOOD = "version: 1\ndestinations:\n  - name: a\n    hosts: [a.example]\n"


def run(tmp_path: Path, rules: str, *extra: str, env: dict | None = None, ca_dir: Path | None = None):
    (tmp_path / "rules.yaml").write_text(rules)
    cmd = [sys.executable, "-m", "clearwall", "run", "--rules", str(tmp_path / "rules.yaml"),
           "--listen", f"127.0.0.1:{free_port()}", "--admin", "off",
           "--ca-dir", str(ca_dir or tmp_path / "ca"), "--log-dir", str(tmp_path / "logs"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, **(env or {})})


def assert_clean_failure(out, *needles: str) -> None:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    for n in needles:
        assert n in out.stderr, out.stderr


def test_broken_rule_file_names_file_line_and_fix(tmp_path):
    out = run(tmp_path, "version: 1\ndestinations:\n  - name: a\n    hots: [a.example]\n")
    assert_clean_failure(out, "rules.yaml:4:5: unknown key 'hots' (did you mean 'hosts'?)")


def test_missing_environment_variable(tmp_path):
    out = run(tmp_path, GOOD + '    inject_headers: {Authorization: "Bearer ${NOT_SET_ANYWHERE}"}\n')
    assert_clean_failure(out, "environment variable NOT_SET_ANYWHERE is not set")


def test_unreadable_or_half_present_ca(tmp_path):
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    (ca_dir / "mitmproxy-ca-cert.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    out = run(tmp_path, GOOD, ca_dir=ca_dir)
    assert_clean_failure(out, str(ca_dir))
    assert not (ca_dir / "mitmproxy-ca.pem").exists()  # never silently replaced by a fresh CA


def test_group_readable_ca_key_refuses_to_start(tmp_path):
    ca_dir = tmp_path / "ca"
    subprocess.run([sys.executable, "-m", "clearwall", "ca", "init", "--dir", str(ca_dir)], check=True, capture_output=True)
    (ca_dir / "mitmproxy-ca.pem").chmod(0o644)
    out = run(tmp_path, GOOD, ca_dir=ca_dir)
    assert_clean_failure(out, "chmod 600")


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run(tmp_path, GOOD, "--listen", f"127.0.0.1:{port}")
    assert_clean_failure(out, f"127.0.0.1:{port} is already in use (--listen)")


def test_bad_listen_flag(tmp_path):
    assert_clean_failure(run(tmp_path, GOOD, "--listen", "localhost"), "--listen 'localhost' is not HOST:PORT")


@pytest.mark.parametrize("args, needle", [
    (["--set", "ignore_hosts=.*"], "ignore_hosts routes traffic around"),
    (["--no-such-flag"], "mitmproxy arguments not understood"),
    (["--set", "map_remote=|example.com|internal.example"], "map_remote would change traffic after Clearwall inspected it"),
    (["--set", "modify_body=/~q/secret/public"], "modify_body would change traffic after Clearwall inspected it"),
    (["--mode", "transparent"], "Clearwall runs as a regular (or upstream) forward proxy only"),
])
def test_unsafe_or_unknown_mitmproxy_arguments(tmp_path, args, needle):
    out = run(tmp_path, GOOD, "--", *args)
    assert_clean_failure(out, needle)


def test_rules_check_command_exit_codes(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text("version: 1\ndestinations:\n  - name: a\n    hosts: [bücher.de]\n")
    ok = subprocess.run([sys.executable, "-m", "clearwall", "rules", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in ok.stdout
    no = subprocess.run([sys.executable, "-m", "clearwall", "rules", "check", str(bad)], capture_output=True, text=True)
    assert no.returncode == 1
    assert f'{bad}:4:13: destinations.hosts: \'bücher.de\' is not ASCII: use "xn--bcher-kva.de"' in no.stderr


def test_version_names_clearwall_and_mitmproxy():
    out = subprocess.run([sys.executable, "-m", "clearwall", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "clearwall" in out.stdout and "mitmproxy 1" in out.stdout
