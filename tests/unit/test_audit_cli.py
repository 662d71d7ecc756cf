"""`clearwall logs` on a generated multi-file log (rotated .gz files plus the live file)."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from clearwall.audit.errors import AuditError
from clearwall.audit.files import LIVE, rotated_files
from clearwall.audit.record import Exchange, Message
from clearwall.audit.writer import LogWriter
from clearwall.cli import logs
from clearwall.errors import ClearwallError

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z
SECRET = "ghp_INJECTEDsecret123"

# (client, host, method, status, action, reason, rules, request body)
TRAFFIC = [
    ("github-mcp", "api.github.com", "GET", 200, "allowed", None, ["github-api"], None),
    ("github-mcp", "api.github.com", "POST", 403, "blocked", "content_blocked", ["aws-access-key", "github-api"], b'{"k":"AKIAABCDEFGHIJKLMNOP"}'),
    ("weather-mcp", "api.weather.test", "GET", 200, "allowed", None, ["weather"], None),
    ("weather-mcp", "pastebin.com", "CONNECT", 403, "blocked", "destination_denied", ["paste-sites"], None),
    ("github-mcp", "api.github.com", "GET", 429, "rate_limited", "rate_limited", ["per-client"], None),
    ("anon", "api.github.com", "GET", 407, "blocked", "auth_required", ["auth"], None),
    ("weather-mcp", "api.weather.test", "GET", 502, "error", "upstream_error", ["weather"], None),
    ("weather-mcp", "api.weather.test", "POST", 200, "would_block", "request_denied", ["weather"], b"city=Paris"),
    ("github-mcp", "uploads.github.com", "PUT", 201, "allowed", None, ["github-api"], b"\x89PNG\r\n\x1a\n\x00\xff"),
    ("github-mcp", "api.github.com", "POST", 200, "redacted", None, ["email-address", "github-api"], b'{"to":"[REDACTED:email-address]"}'),
]


def exchange(i: int) -> Exchange:
    client, host, method, status, action, reason, rules, body = TRAFFIC[i % len(TRAFFIC)]
    return Exchange(
        timestamp=T0 + i * 60, flow_id=f"flow-{i:03d}", action=action, reason=reason, duration=0.01,
        rules=rules, client_label=client, client_ip="10.0.3.7", client_port=40000 + i, dest_domain=host,
        dest_port=443, url=f"https://{host}/path/{i}?n={i}", http_version="1.1", method=method,
        request_headers=[("Authorization", f"Bearer {SECRET}"), ("X-Forward", SECRET)],
        request_body=body, status=status, response_headers=[("Content-Type", "application/json")],
        response_body=b'{"echo":"' + SECRET.encode() + b'","n":' + str(i).encode() + b"}",
        messages=[Message("client", T0 + i * 60 + 1, "ws hello")] if i == 2 else [],
        secrets=(SECRET,),
    )


N = 40


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("logs")
    w = LogWriter(d, rotate_bytes=6000)
    w.start()
    for i in range(N):
        w.submit(exchange(i))
    w.close()
    assert len(rotated_files(d)) >= 3 and all(f.compressed for f in rotated_files(d))
    assert (d / LIVE).stat().st_size > 0
    return d


def run(capsys, *argv) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="clearwall")
    logs.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["logs", *argv])
    try:
        code = args.func(args)
    except ClearwallError as e:
        print(f"clearwall: {e}", file=sys.stderr)
        code = 1
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x]


def test_the_secret_is_nowhere_in_the_log_directory(log_dir):
    for path in log_dir.iterdir():
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert SECRET.encode() not in data, path
    assert b"[REDACTED]" in (log_dir / LIVE).read_bytes()


def test_search_everything_in_time_order(capsys, log_dir):
    code, out, _ = run(capsys, "search", "--log-dir", str(log_dir), "--json")
    got = [r["event"]["id"] for r in json_lines(out)]
    assert code == 0 and got == [f"flow-{i:03d}" for i in range(N)]


@pytest.mark.parametrize(
    "name, flags, expected",
    [
        ("by client", ["--client", "weather-mcp"], [i for i in range(N) if TRAFFIC[i % 10][0] == "weather-mcp"]),
        ("by client glob", ["--client", "weather-*"], [i for i in range(N) if TRAFFIC[i % 10][0] == "weather-mcp"]),
        ("by host glob", ["--host", "*.github.com"], [i for i in range(N) if TRAFFIC[i % 10][1].endswith(".github.com")]),
        ("by rule", ["--rule", "aws-access-key"], [i for i in range(N) if i % 10 == 1]),
        ("by action", ["--action", "would_block"], [i for i in range(N) if i % 10 == 7]),
        ("by exact status", ["--status", "429"], [i for i in range(N) if i % 10 == 4]),
        ("by status class", ["--status", "4xx"], [i for i in range(N) if i % 10 in (1, 3, 4, 5)]),
        ("by status range", ["--status", "500-599"], [i for i in range(N) if i % 10 == 6]),
        ("by body text", ["--text", "city=Paris"], [i for i in range(N) if i % 10 == 7]),
        ("text inside a base64 body", ["--text", "PNG"], [i for i in range(N) if i % 10 == 8]),
        ("text in a websocket message", ["--text", "ws hello"], [2]),
        ("by body regex", ["--regex", r'"n":3\d\}'], list(range(30, 40))),
        ("since an ISO time", ["--since", "2026-11-18T11:06:40Z"], list(range(N))),
        ("since a later ISO time", ["--since", "2026-11-18T11:45:40.000Z"], list(range(39, N))),
        ("a time window", ["--since", "2026-11-18T11:26:40Z", "--until", "2026-11-18T11:29:40Z"], [20, 21, 22]),
        ("filters combine", ["--client", "github-mcp", "--action", "blocked"], [i for i in range(N) if i % 10 == 1]),
        ("nothing matches", ["--host", "nowhere.test"], []),
    ],
)
def test_search_filters(capsys, log_dir, name, flags, expected):
    code, out, _ = run(capsys, "search", "--log-dir", str(log_dir), "--json", *flags)
    assert code == 0
    assert [r["event"]["id"] for r in json_lines(out)] == [f"flow-{i:03d}" for i in expected]


def test_search_table_for_people(capsys, log_dir):
    code, out, err = run(capsys, "search", "--log-dir", str(log_dir), "--rule", "aws-access-key")
    lines = out.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 5
    assert "blocked" in lines[1] and "403" in lines[1] and "aws-access-key" in lines[1] and "content_blocked" in lines[1]
    assert "4 record(s)" in err


def test_search_limit(capsys, log_dir):
    _, out, _ = run(capsys, "search", "--log-dir", str(log_dir), "--json", "--limit", "3")
    assert len(json_lines(out)) == 3


@pytest.mark.parametrize("n", [1, 5, 25, 100])
def test_tail_shows_the_last_records_across_files(capsys, log_dir, n):
    _, out, _ = run(capsys, "tail", "--log-dir", str(log_dir), "--json", "-n", str(n))
    got = [r["event"]["id"] for r in json_lines(out)]
    assert got == [f"flow-{i:03d}" for i in range(max(0, N - n), N)]


def test_tail_follow_prints_new_records_across_a_rotation(tmp_path):
    w = LogWriter(tmp_path, rotate_bytes=3000)
    w.start()
    w.submit(exchange(0))
    env = {**os.environ, "CLEARWALL_LOG_DIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", FOLLOW], stdout=subprocess.PIPE, env=env)
    try:
        time.sleep(1.0)
        for i in range(1, 8):  # several rotations at 3000 bytes
            w.submit(exchange(i))
            time.sleep(0.05)
        w.close()
        ids: list[str] = []
        end = time.monotonic() + 10
        reader = threading.Thread(target=lambda: [ids.append(json.loads(x)["event"]["id"]) for x in p.stdout])
        reader.daemon = True
        reader.start()
        while len(ids) < 8 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        p.kill()
        p.wait()
    assert ids == [f"flow-{i:03d}" for i in range(8)]
    assert len(rotated_files(tmp_path)) >= 2


FOLLOW = """
import argparse, sys
from clearwall.cli import logs
p = argparse.ArgumentParser(); logs.register(p.add_subparsers())
a = p.parse_args(["logs", "tail", "-f", "--json", "-n", "5"])
sys.stdout.reconfigure(line_buffering=True)
a.func(a)
"""


def test_show_prints_one_record_in_full(capsys, log_dir):
    code, out, _ = run(capsys, "show", "--log-dir", str(log_dir), "flow-011")
    assert code == 0 and out.startswith("# ") and ".jsonl.gz:" in out.splitlines()[0]
    record = json.loads(out.split("\n", 1)[1])
    assert record["event"]["id"] == "flow-011"
    assert record["http"]["request"]["body"]["content"] == '{"k":"AKIAABCDEFGHIJKLMNOP"}'


def test_show_json(capsys, log_dir):
    _, out, _ = run(capsys, "show", "--log-dir", str(log_dir), "--json", "flow-039")
    assert json_lines(out)[0]["event"]["id"] == "flow-039"


def test_show_unknown_id_is_one_sentence_and_exit_1(capsys, log_dir):
    code, out, err = run(capsys, "show", "--log-dir", str(log_dir), "no-such-id")
    assert code == 1 and out == ""
    assert "no record with event.id 'no-such-id'" in err and "Traceback" not in err


def test_stats_counts(capsys, log_dir):
    code, out, _ = run(capsys, "stats", "--log-dir", str(log_dir), "--json")
    d = json.loads(out)
    assert code == 0 and d["records"] == N
    assert (d["blocked"], d["would_block"], d["rate_limited"], d["redacted"], d["allowed"]) == (12, 4, 4, 4, 12)
    assert d["auth_failures"] == 4
    assert d["upstream_errors"] == 4  # status 502 / action error
    assert d["top_rules"][0] == ["github-api", 16]
    assert dict(d["top_clients"]) == {"github-mcp": 20, "weather-mcp": 16, "anon": 4}
    assert d["top_hosts"][0] == ["api.github.com", 20]


def test_stats_table_and_filters(capsys, log_dir):
    _, out, _ = run(capsys, "stats", "--log-dir", str(log_dir), "--client", "anon")
    assert "auth failures           4" in out and "records                 4" in out


def test_verify_ok_and_broken(capsys, tmp_path, log_dir):
    code, out, _ = run(capsys, "verify", "--log-dir", str(log_dir))
    assert code == 0 and out.startswith(f"OK: {N} records")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in log_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    lines = (broken / LIVE).read_bytes().splitlines(keepends=True)
    del lines[1]
    (broken / LIVE).write_bytes(b"".join(lines))
    code, out, _ = run(capsys, "verify", "--log-dir", str(broken))
    assert code == 1 and out.startswith("BROKEN")
    assert "flows.jsonl:2" in out and "deleted, inserted or reordered" in out
    code, out, _ = run(capsys, "verify", "--log-dir", str(broken), "--json")
    d = json.loads(out)
    assert code == 1 and d["ok"] is False and d["breaks"][0]["line"] == 2


def test_export_har(capsys, tmp_path, log_dir):
    out_file = tmp_path / "flows.har"
    code, _, err = run(capsys, "export", "--har", "--out", str(out_file), "--log-dir", str(log_dir))
    har = json.loads(out_file.read_bytes())
    assert code == 0 and f"{N} entries" in err
    assert har["log"]["version"] == "1.2" and har["log"]["creator"]["name"] == "clearwall"
    entries = har["log"]["entries"]
    assert len(entries) == N
    e = entries[1]
    assert e["request"]["method"] == "POST" and e["request"]["url"] == "https://api.github.com/path/1?n=1"
    assert e["request"]["queryString"] == [{"name": "n", "value": "1"}]
    assert e["request"]["postData"]["text"] == '{"k":"AKIAABCDEFGHIJKLMNOP"}'
    assert {"name": "authorization", "value": "[REDACTED]"} in e["request"]["headers"]
    assert e["response"]["status"] == 403 and e["response"]["content"]["mimeType"] == "application/json"
    assert e["time"] == 10.0 and e["_clearwall"]["action"] == "blocked"
    for key in ("startedDateTime", "time", "request", "response", "cache", "timings"):
        assert key in entries[0]


def test_export_har_to_stdout_with_filters(capsys, log_dir):
    _, out, _ = run(capsys, "export", "--har", "--action", "rate_limited", "--log-dir", str(log_dir))
    assert [e["response"]["status"] for e in json.loads(out)["log"]["entries"]] == [429] * 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--log-dir", "/nonexistent/logs"], "log directory /nonexistent/logs does not exist"),
        (["search", "--since", "yesterday"], "--since 'yesterday' is neither"),
        (["search", "--regex", "("], "--regex '(' is not a valid regular expression"),
        (["search", "--status", "4x"], "--status: status must be like"),
        (["export"], "export needs a format: --har"),
        (["export", "--har", "--out", "/nonexistent/dir/x.har"], "cannot write --out /nonexistent/dir/x.har"),
    ],
)
def test_operator_errors_are_one_sentence(capsys, log_dir, argv, message):
    if "--log-dir" not in argv:
        argv = [*argv, "--log-dir", str(log_dir)]
    code, _, err = run(capsys, *argv)
    assert code == 1 and message in err and "Traceback" not in err


def test_log_dir_from_the_environment(capsys, log_dir, monkeypatch):
    monkeypatch.setenv("CLEARWALL_LOG_DIR", str(log_dir))
    code, out, _ = run(capsys, "verify")
    assert code == 0 and out.startswith("OK")


def test_relative_since(capsys, tmp_path):
    w = LogWriter(tmp_path)
    w.start()
    for i, age in enumerate([7200, 1800, 60]):
        w.submit(Exchange(timestamp=time.time() - age, flow_id=f"r{i}", action="allowed"))
    w.close()
    _, out, _ = run(capsys, "search", "--log-dir", str(tmp_path), "--json", "--since", "1h")
    assert [r["event"]["id"] for r in json_lines(out)] == ["r1", "r2"]


def test_the_installed_command_exits_1_on_a_broken_chain(tmp_path):
    (tmp_path / LIVE).write_bytes(orjson.dumps({"event": {"id": "x"}}) + b"\n")
    p = subprocess.run([sys.executable, "-m", "clearwall", "logs", "verify", "--log-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "flows.jsonl:1 (event.id x): no log.hash" in p.stdout
    assert "Traceback" not in p.stderr


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_damaged_archive_is_skipped_with_a_warning(capsys, tmp_path, log_dir):
    d = _copy(log_dir, tmp_path / "damaged")
    archive = rotated_files(d)[0].path
    archive.write_bytes(archive.read_bytes()[:200])
    code, out, err = run(capsys, "search", "--log-dir", str(d), "--json")
    got = [r["event"]["id"] for r in json_lines(out)]
    assert code == 0 and 0 < len(got) < N and got[-1] == f"flow-{N - 1:03d}"
    assert f"cannot read the rest of {archive}" in err and "Traceback" not in err


def test_verify_expect_head(capsys, log_dir):
    head = json_lines(run(capsys, "tail", "--log-dir", str(log_dir), "--json", "-n", "1")[1])[0]["log"]["hash"]
    code, out, _ = run(capsys, "verify", "--log-dir", str(log_dir), "--expect-head", head)
    assert code == 0 and out.startswith("OK")
    code, out, _ = run(capsys, "verify", "--log-dir", str(log_dir), "--expect-head", "ab" * 32)
    assert code == 1 and "deleted from the end" in out
    code, _, err = run(capsys, "verify", "--log-dir", str(log_dir), "--expect-head", "nothex")
    assert code == 1 and "--expect-head 'nothex' is not a sha256 hash" in err


def test_a_closed_output_pipe_ends_quietly(log_dir):
    p = subprocess.run(f"{sys.executable} -m clearwall logs search --json --log-dir {log_dir} | head -n 1",
                       shell=True, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr


@pytest.mark.parametrize("argv", [["tail", "-n", "-1"], ["search", "--limit", "x"], ["stats", "--top", "-5"]])
def test_bad_counts_are_usage_errors_not_tracebacks(capsys, log_dir, argv):
    with pytest.raises(SystemExit) as e:
        run(capsys, *argv, "--log-dir", str(log_dir))
    assert e.value.code == 2
    assert "is not a whole number >= 0" in capsys.readouterr().err
