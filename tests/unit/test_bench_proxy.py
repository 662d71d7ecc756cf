"""`scripts/bench proxy`: option parsing, proxy command lines, the report (ratios, failed targets,
runs with errors), the bench rule files, and one short real run through bare mitmdump."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import proxy  # noqa: E402
from benchlib.loadgen import LoadResult  # noqa: E402
from benchlib.proxy import Cell, Target  # noqa: E402

RULES = ROOT / "scripts" / "benchlib" / "rules"


@pytest.mark.parametrize("text, expected", [
    ("mitmdump,clearwall", ["mitmdump", "clearwall"]),
    ("clearwall", ["clearwall"]),
    (" mitmdump , ", ["mitmdump"]),
])
def test_targets_are_parsed(text, expected):
    assert proxy.parse_targets(text) == expected


@pytest.mark.parametrize("text", ["", ",", "squid", "mitmdump,mitmdump", "mitmdump,nginx"])
def test_unknown_empty_or_repeated_targets_are_refused(text):
    with pytest.raises(ValueError):
        proxy.parse_targets(text)


@pytest.mark.parametrize("text, expected", [("16", [16]), ("1,16", [1, 16]), ("1", [1])])
def test_client_counts_are_parsed(text, expected):
    assert proxy.parse_clients(text) == expected


@pytest.mark.parametrize("text", ["0", "", "1,1", "x", "1,-2"])
def test_bad_client_counts_are_refused(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError):
        proxy.parse_clients(text)


def test_ratios_compare_runs_of_the_same_client_count():
    cells = [Cell("mitmdump", "keepalive", [_result(500)], 16),
             Cell("mitmdump", "keepalive", [_result(100)], 1),
             Cell("clearwall[a]", "keepalive", [_result(250)], 16),
             Cell("clearwall[a]", "keepalive", [_result(80)], 1)]
    head, *rows = proxy.table_rows({(c.target, c.mode, c.clients): c for c in cells}, TARGETS[:2])
    by_key = {(r[0], r[2]): dict(zip(head, r)) for r in rows}
    assert by_key[("clearwall[a]", "16")]["req/s vs mitmdump"] == "0.50"
    assert by_key[("clearwall[a]", "1")]["req/s vs mitmdump"] == "0.80"


def test_a_variant_names_an_existing_rule_path():
    name, path = proxy.parse_variant(f"filters={RULES / 'filters'}")
    assert name == "filters" and path == (RULES / "filters").resolve()


@pytest.mark.parametrize("text", ["filters", "=x.yaml", "name=", "name=/does/not/exist.yaml"])
def test_bad_variants_are_refused(text):
    with pytest.raises(ValueError):
        proxy.parse_variant(text)


@pytest.mark.parametrize("kinds, variants, names", [
    (["mitmdump", "clearwall"], [], ["mitmdump", "clearwall"]),
    (["mitmdump"], [("a", Path("a.yaml"))], ["mitmdump"]),
    (["mitmdump", "clearwall"], [("a", Path("a.yaml")), ("b", Path("b"))],
     ["mitmdump", "clearwall[a]", "clearwall[b]"]),
])
def test_each_variant_is_one_clearwall_target(kinds, variants, names):
    assert [t.name for t in proxy.expand_targets(kinds, variants)] == names


def test_bare_mitmdump_gets_only_confdir_and_upstream_trust(tmp_path):
    cmd = proxy.proxy_command(Target("mitmdump", "mitmdump"), tmp_path, 8080, 9090,
                              Path("/ca.pem"), [], ["clearwall"])
    assert Path(cmd[0]).name == "mitmdump"
    assert cmd[1:] == ["-q", "--listen-host", "127.0.0.1", "--listen-port", "8080",
                       "--set", f"confdir={tmp_path / 'confdir'}",
                       "--set", "ssl_verify_upstream_trusted_ca=/ca.pem"]


def test_clearwall_gets_the_spec_flags_and_mitmproxy_args_after_a_double_dash(tmp_path):
    target = Target("clearwall", "clearwall", Path("/r.yaml"))
    cmd = proxy.proxy_command(target, tmp_path, 8080, 9090, Path("/ca.pem"),
                              ["--set", "http2=false"], ["py", "-m", "clearwall"])
    assert cmd == ["py", "-m", "clearwall", "run", "--rules", "/r.yaml",
                   "--listen", "127.0.0.1:8080", "--ca-dir", str(tmp_path / "ca"),
                   "--log-dir", str(tmp_path / "logs"), "--admin", "127.0.0.1:9090",
                   "--", "--set", "http2=false"]


def _result(rps: float, errors: int = 0, p50: float = 0.002) -> LoadResult:
    r = LoadResult("keepalive", 16, 1.0, requests=int(rps), errors=errors,
                   latencies=[p50] * max(1, int(rps)), cpu={"proxy": 0.5})
    if errors:
        r.error_samples["HTTP 502: upstream"] = errors
    return r


def _table(cells: list[Cell], targets: list[Target]) -> dict[str, dict[str, str]]:
    """target -> {column header: cell text}"""
    head, *rows = proxy.table_rows({(c.target, c.mode, c.clients): c for c in cells}, targets)
    return {row[0]: dict(zip(head, row)) for row in rows}


TARGETS = [Target("mitmdump", "mitmdump"), Target("clearwall[a]", "clearwall", Path("a")),
           Target("clearwall[b]", "clearwall", Path("b"))]


def test_ratios_are_of_median_throughput_against_mitmdump_and_the_first_variant():
    table = _table([Cell("mitmdump", "keepalive", [_result(400), _result(500), _result(900)]),
                    Cell("clearwall[a]", "keepalive", [_result(250)]),
                    Cell("clearwall[b]", "keepalive", [_result(200)])], TARGETS)
    assert table["mitmdump"]["req/s"] == "500.0"              # median of 400, 500, 900
    assert table["clearwall[a]"]["req/s vs mitmdump"] == "0.50"
    assert table["clearwall[a]"]["req/s vs clearwall[a]"] == "1.00"
    assert table["clearwall[b]"]["req/s vs mitmdump"] == "0.40"
    assert table["clearwall[b]"]["req/s vs clearwall[a]"] == "0.80"


def test_cpu_per_request_is_the_proxy_cpu_time_over_requests_served():
    # 0.5 cores for 1 s: 500 ms of CPU; over 500 requests 1 ms each, over 250 requests 2 ms.
    table = _table([Cell("mitmdump", "keepalive", [_result(500)]),
                    Cell("clearwall[a]", "keepalive", [_result(250)])], TARGETS[:2])
    assert table["mitmdump"]["CPU ms/req"] == "1.00"
    assert table["clearwall[a]"]["CPU ms/req"] == "2.00"
    assert table["clearwall[a]"]["CPU/req vs mitmdump"] == "2.00"
    assert table["clearwall[a]"]["proxy CPU"] == "50%"


def test_a_target_that_failed_shows_failed_and_no_ratio():
    failed = Cell("mitmdump", "keepalive", [], failure="exited with status 2")
    table = _table([failed, Cell("clearwall[a]", "keepalive", [_result(250)]),
                    Cell("clearwall[b]", "keepalive", [_result(200)])], TARGETS)
    assert table["mitmdump"]["req/s"] == "FAILED"
    assert table["clearwall[a]"]["req/s vs mitmdump"] == "n/a"
    assert table["clearwall[a]"]["req/s vs clearwall[a]"] == "1.00"


def test_a_run_with_errors_gets_no_ratio_and_is_reported_as_a_problem():
    cells = [Cell("mitmdump", "keepalive", [_result(500)]),
             Cell("clearwall[a]", "keepalive", [_result(300, errors=3)])]
    row = _table(cells, TARGETS[:2])["clearwall[a]"]
    assert row["errors"] == "3"
    assert row["req/s vs mitmdump"] == row["CPU/req vs mitmdump"] == row["req/s vs clearwall[a]"] == "n/a"
    issues = proxy.problems({(c.target, c.mode, c.clients): c for c in cells})
    assert len(issues) == 1 and "3 failed requests" in issues[0] and "HTTP 502" in issues[0]


def test_clean_runs_are_no_problem():
    cells = [Cell("mitmdump", "keepalive", [_result(500)])]
    assert proxy.problems({(c.target, c.mode, c.clients): c for c in cells}) == []


@pytest.mark.parametrize("rules", ["allowlist.yaml", "filters"])
def test_bench_rule_sets_load_and_allow_the_bench_upstream_only(rules):
    from clearwall.policy.engine import Target as Request, decide
    from clearwall.policy.loader import load_rules

    ruleset = load_rules(RULES / rules, environ={"BENCH_UPSTREAM_PORT": "8443",
                                                 "BENCH_UPSTREAM_CA": "/dev/null"})
    assert len(ruleset.destinations) >= 12
    bench = dict(host="localhost", port=8443, content_type="application/json")
    assert decide(ruleset, Request(**bench)).allowed                      # CONNECT
    assert decide(ruleset, Request(**bench, method="GET", path="/bench")).allowed
    assert decide(ruleset, Request(**bench, method="POST", path="/bench", has_body=True)).allowed
    assert not decide(ruleset, Request("localhost", 8444)).allowed        # another port
    assert not decide(ruleset, Request("pastebin.com", 443)).allowed


def test_a_target_that_fails_to_start_is_printed_and_exits_non_zero(capsys):
    failing = f"{sys.executable} -c 'import sys; print(\"no such thing\"); sys.exit(3)'"
    code = proxy.main(["--targets", "clearwall", "--clearwall-cmd", failing,
                       "--duration", "0.5", "--warmup", "0"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "FAILED" in out
    assert "exited with status 3" in err and "no such thing" in err
    assert "NOT valid" in err


@pytest.mark.slow
def test_a_short_run_through_bare_mitmdump_is_clean(capsys):
    code = proxy.main(["--targets", "mitmdump", "--mode", "keepalive", "--clients", "4",
                       "--duration", "1", "--warmup", "0.5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"].startswith("scripts/bench proxy --targets mitmdump")
    [cell] = doc["cells"]
    assert cell["target"] == "mitmdump" and cell["failure"] is None and cell["errors"] == 0
    assert cell["median"]["rps"] > 20
    assert 0 < cell["median"]["proxy_cpu"] <= 2.0


@pytest.mark.parametrize("machine, proxy_cpu, upstream, client, expected", [
    (1.0, 0.6, 0.1, 0.1, 0.2),     # 0.2 cores of unrelated work
    (0.8, 0.6, 0.1, 0.1, 0.0),     # nothing else ran
    (0.7, 0.6, 0.1, 0.1, 0.0),     # sampling jitter never gives negative work
])
def test_other_work_is_machine_cpu_minus_the_bench_processes(machine, proxy_cpu, upstream, client, expected):
    r = LoadResult("keepalive", 16, 1.0, client_cpu=client,
                   cpu={"machine": machine, "proxy": proxy_cpu, "upstream": upstream})
    assert proxy.other_cpu(r) == pytest.approx(expected)


def test_other_work_is_unknown_when_a_probe_failed():
    r = LoadResult("keepalive", 16, 1.0, cpu={"machine": 1.0, "proxy": None, "upstream": 0.1})
    assert proxy.other_cpu(r) is None


def test_machine_and_process_cpu_counters_move_forward():
    import os
    m0, p0 = proxy.machine_busy_seconds(), proxy.process_cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert proxy.machine_busy_seconds() >= m0 and proxy.process_cpu_seconds(os.getpid()) > p0


def test_cpu_of_a_process_that_is_gone_is_unknown_not_zero():
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        proxy.process_cpu_seconds(child.pid)


def test_cpu_of_a_process_includes_its_living_children():
    import os
    import subprocess
    import time

    before = proxy.process_cpu_seconds(os.getpid())
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while proxy.process_cpu_seconds(os.getpid()) - before < 0.25:
            assert time.monotonic() < deadline, "the child's CPU was never counted"
            time.sleep(0.05)
    finally:
        busy.kill()
        busy.wait()


def _write_log(log_dir: Path, live: int, rotated: list[int]) -> None:
    import gzip
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "flows.jsonl").write_text('{"event": {}}\n' * live)
    for i, n in enumerate(rotated):
        name = f"flows-2026010{i + 1}T000000.000000Z.jsonl"
        with gzip.open(log_dir / f"{name}.gz", "wt") as f:
            f.write('{"event": {}}\n' * n)
        (log_dir / name).write_text('{"event": {}}\n' * n)  # compression not yet finished: same records
    (log_dir / "flows.jsonl.gz.tmp").write_text('{"event": {}}\n' * 7)  # a compression in progress


@pytest.mark.parametrize("live, rotated, expected", [
    (0, [], 0),
    (5, [], 5),
    (5, [3, 2], 10),
])
def test_body_log_records_are_counted_across_rotated_files(tmp_path, live, rotated, expected):
    _write_log(tmp_path / "logs", live, rotated)
    assert proxy.count_log_records(tmp_path / "logs") == expected


@pytest.mark.parametrize("logged, served, flagged", [
    (99, 100, True),     # one exchange missing from the log
    (100, 100, False),
    (130, 100, False),   # refused requests are logged too
])
def test_a_clearwall_run_whose_log_misses_exchanges_is_not_valid(tmp_path, logged, served, flagged):
    _write_log(tmp_path / "logs", logged, [])
    target = Target("clearwall", "clearwall", Path("r.yaml"))
    run = _result(10)
    run.completed = served
    cells = {("clearwall", "keepalive", 16): Cell("clearwall", "keepalive", [run])}
    proxy.check_logged(cells, target, [("keepalive", 16)], tmp_path / "logs")
    assert cells[("clearwall", "keepalive", 16)].valid is not flagged
    issues = proxy.problems(cells)
    assert (f"{logged} records for {served} requests" in " ".join(issues)) is flagged
