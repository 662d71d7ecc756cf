"""`scripts/bench proxy`: req/s and latency through bare mitmdump and through `clearwall run`,
side by side in one invocation, and their ratio.

    scripts/bench proxy [--mode keepalive|newconn|both] [--clients 16|1,16] [--duration 10]
                        [--rounds 1] [--targets mitmdump,clearwall] [--variant NAME=RULES]...
                        [--body-bytes 0] [--response-bytes 4096] [--json] [-- MITMPROXY_ARGS...]

One local HTTPS upstream serves every run. Each round starts each target on a free port, runs
every mode against it, and stops it; the target order rotates between rounds so that drift of
the machine (other work, thermal, caches) spreads over all targets. Medians over rounds are
reported. Arguments after `--` go to every proxy as mitmproxy options (`--set k=v`).

Rule files for `--variant` may use `${BENCH_UPSTREAM_PORT}` and `${BENCH_UPSTREAM_CA}`, which
the bench sets in the proxy's environment (see rules/allowlist.yaml).

Exit status: 0 when every target started and no request failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.loadgen import MODES, LoadResult, LoadSpec, run_load
from benchlib.upstream import UpstreamProcess

HERE = Path(__file__).resolve().parent
DEFAULT_RULES = HERE / "rules" / "allowlist.yaml"
KINDS = ("mitmdump", "clearwall")
NOISY_OTHER_CPU = 0.25  # cores used by unrelated work above which a run is called noisy
CA_CERT_FILE = "mitmproxy-ca-cert.pem"  # in mitmdump's confdir and in clearwall's --ca-dir


class TargetFailed(Exception):
    """A proxy under test did not start or died; the message says why."""


@dataclass(frozen=True)
class Target:
    name: str                    # as printed: mitmdump, clearwall, clearwall[filters]
    kind: str                    # mitmdump | clearwall
    rules: Path | None = None    # clearwall only


def parse_targets(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(f"--targets takes a comma-separated subset of {','.join(KINDS)}, got {text!r}")
    return kinds


def parse_clients(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients takes N or N,N,..., got {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"--clients takes distinct counts >= 1, got {text!r}")
    return counts


def parse_variant(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--variant takes NAME=RULES_PATH, got {text!r}")
    if not Path(path).exists():
        raise ValueError(f"--variant {name}: rule path {path} does not exist")
    return name.strip(), Path(path).resolve()


def expand_targets(kinds: list[str], variants: list[tuple[str, Path]]) -> list[Target]:
    """One mitmdump target, and one clearwall target per variant (the default rules if none)."""
    out = []
    for kind in kinds:
        if kind == "mitmdump":
            out.append(Target("mitmdump", "mitmdump"))
        elif not variants:
            out.append(Target("clearwall", "clearwall", DEFAULT_RULES))
        else:
            out.extend(Target(f"clearwall[{n}]", "clearwall", p) for n, p in variants)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_command(target: Target, workdir: Path, port: int, admin_port: int, upstream_ca: Path,
                  mitm_args: list[str], clearwall_cmd: list[str]) -> list[str]:
    if target.kind == "mitmdump":
        # mitmproxy's defaults, except what the bench needs: its own confdir (fresh CA, no
        # stray config.yaml) and trust in the bench upstream's CA.
        return [str(Path(sys.executable).parent / "mitmdump"), "-q",
                "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={workdir / 'confdir'}",
                "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}", *mitm_args]
    cmd = [*clearwall_cmd, "run", "--rules", str(target.rules), "--listen", f"127.0.0.1:{port}",
           "--ca-dir", str(workdir / "ca"), "--log-dir", str(workdir / "logs"),
           "--admin", f"127.0.0.1:{admin_port}"]
    return cmd + (["--", *mitm_args] if mitm_args else [])


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def other_cpu(result: LoadResult) -> float | None:
    """Cores used during the window by everything but the proxy, the upstream and the load
    generator: other work on a shared machine, which makes the figures noisy."""
    cpu = result.cpu
    if any(cpu.get(k) is None for k in ("machine", "proxy", "upstream")):
        return None
    return max(0.0, cpu["machine"] - cpu["proxy"] - cpu["upstream"] - result.client_cpu)


def _stat_fields(pid: int | str) -> list[str]:
    # After the command name, which may hold spaces: state, ppid, ..., utime (12th), stime.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and of its living children. Raises OSError once `pid` is gone, so
    a dead proxy's CPU reads as unknown, not as zero."""
    fields = _stat_fields(pid)
    total = int(fields[11]) + int(fields[12])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(pid):
            try:
                child = _stat_fields(entry.name)
            except OSError:
                continue  # exited while we looked
            if child[1] == str(pid):
                total += int(child[11]) + int(child[12])
    return total / os.sysconf("SC_CLK_TCK")


class ProxyProcess:
    """One proxy under test: started, waited for until it accepts, stopped."""

    def __init__(self, cmd: list[str], port: int, workdir: Path, env: dict[str, str],
                 start_timeout: float = 60.0) -> None:
        self.cmd, self.port, self.workdir = cmd, port, workdir
        self.start_timeout = start_timeout
        self.failed = False
        workdir.mkdir(parents=True, exist_ok=True)
        self._out = open(workdir / "proxy.out", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                     cwd=workdir, start_new_session=True)

    def output_tail(self, lines: int = 15) -> str:
        self._out.flush()
        text = (self.workdir / "proxy.out").read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:]) or "(no output)"

    def wait_ready(self, ca_file: Path) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetFailed(f"exited with status {self.proc.returncode}:\n{self.output_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if ca_file.exists():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TargetFailed(f"did not accept on 127.0.0.1:{self.port} (with {ca_file.name} "
                           f"written) within {self.start_timeout:.0f} s:\n{self.output_tail()}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise TargetFailed(f"died during the run (status {self.proc.returncode}):\n"
                               f"{self.output_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


@dataclass
class Cell:
    """The runs of one target in one mode, over all rounds."""
    target: str
    mode: str
    runs: list[LoadResult]
    clients: int = 16
    failure: str | None = None     # first line of why the target did not run
    detail: str = ""               # the whole reason, with the proxy's last output lines
    unlogged: list[str] = field(default_factory=list)  # rounds whose body log missed exchanges

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None

    @property
    def valid(self) -> bool:
        return self.failure is None and bool(self.runs) and self.errors == 0 and not self.unlogged


def ratio(cell: Cell, base: Cell | None, attr: str = "rps") -> str:
    """`cell`'s median `attr` over `base`'s; n/a when either failed or had errors."""
    if base is None:
        return "-"
    if not (cell.valid and base.valid) or not base.median(attr) or cell.median(attr) is None:
        return "n/a"
    return f"{cell.median(attr) / base.median(attr):.2f}"


def count_log_records(log_dir: Path) -> int:
    """Records in Clearwall's body log, as `clearwall logs` reads it: the live file and every
    rotation once (plain or compressed), no temporary or torn-line files."""
    from clearwall.audit.reader import iter_records

    return sum(1 for _ in iter_records(log_dir))


Key = tuple[str, str, int]  # target name, mode, clients


def check_logged(cells: dict[Key, Cell], target: Target, loads: list[tuple[str, int]],
                 log_dir: Path) -> None:
    """Clearwall logs every exchange (SPEC §5): after a clean stop, its body log must hold at
    least one record per request it answered, or the speed was bought by not recording."""
    keys = [(target.name, *load) for load in loads]
    served = sum(cells[k].runs[-1].completed for k in keys if cells[k].runs)
    logged = count_log_records(log_dir)
    if logged < served:
        cells[keys[0]].unlogged.append(
            f"its body log holds {logged} records for {served} requests answered")


def run_bench(args, mitm_args: list[str], targets: list[Target], workroot: Path,
              log=print) -> dict[Key, Cell]:
    modes = list(MODES) if args.mode == "both" else [args.mode]
    loads = [(mode, clients) for mode in modes for clients in args.clients]
    cells = {(t.name, *load): Cell(t.name, load[0], [], load[1]) for t in targets for load in loads}
    with UpstreamProcess(workroot / "upstream", args.response_bytes) as upstream:
        log(f"upstream: https://localhost:{upstream.port}/ ({args.response_bytes}-byte JSON answers)")
        env = dict(os.environ, BENCH_UPSTREAM_PORT=str(upstream.port),
                   BENCH_UPSTREAM_CA=str(upstream.tls.ca_cert))
        for rnd in range(args.rounds):
            shift = rnd % len(targets)
            for target in targets[shift:] + targets[:shift]:
                if cells[(target.name, *loads[0])].failure:
                    continue  # it failed to start once; do not retry every round
                log(f"round {rnd + 1}/{args.rounds} {target.name}")
                _run_target(args, mitm_args, target, loads, cells, upstream, env,
                            workroot / f"{target.name}-r{rnd}", log)
    return cells


def _run_target(args, mitm_args, target: Target, loads, cells: dict[Key, Cell], upstream,
                env: dict[str, str], workdir: Path, log) -> None:
    """Start one proxy, run every load through it, stop it, and check its body log."""
    port = free_port()
    cmd = proxy_command(target, workdir, port, free_port(), upstream.tls.ca_cert, mitm_args,
                        shlex.split(args.clearwall_cmd))
    ca_file = workdir / ("confdir" if target.kind == "mitmdump" else "ca") / CA_CERT_FILE
    log(f"  $ {shlex.join(cmd)}")
    proxy = ProxyProcess(cmd, port, workdir, env)
    try:
        proxy.wait_ready(ca_file)
        for mode, clients in loads:
            spec = LoadSpec(("localhost", upstream.port), str(ca_file), ("127.0.0.1", port), mode,
                            clients, args.duration, args.warmup, args.body_bytes,
                            expect_bytes=args.response_bytes)
            result = run_load(spec, {"proxy": lambda: process_cpu_seconds(proxy.proc.pid),
                                     "upstream": lambda: process_cpu_seconds(upstream.pid),
                                     "machine": machine_busy_seconds})
            result.cpu["other"] = other_cpu(result)
            proxy.check_alive()
            cells[(target.name, mode, clients)].runs.append(result)
            log(f"  {mode}, clients={clients}: {result.rps:.1f} req/s, p50 {result.p50_ms:.2f} ms, "
                f"p99 {result.p99_ms:.2f} ms, errors {result.errors}; CPU: proxy "
                f"{_pct(result.proxy_cpu)} ({_ms(result.proxy_ms_per_request)} ms/req), "
                f"load generator {_pct(result.client_cpu)}, other work {_pct(result.other_cpu)}")
    except TargetFailed as e:
        log(f"  {target.name} FAILED: {e}")
        for load in loads:
            cells[(target.name, *load)].failure = str(e).splitlines()[0]
            cells[(target.name, *load)].detail = str(e)
        return
    finally:
        proxy.stop()
    if target.kind == "clearwall":
        check_logged(cells, target, loads, workdir / "logs")


def table_rows(cells: dict[Key, Cell], targets: list[Target]) -> list[list[str]]:
    """A header, then one row per target and mode. CPU ms/req (the proxy's CPU time per request) is the figure
    least disturbed by other work on a shared machine; req/s and latency follow the CPU share
    the proxy happened to get."""
    first_variant = next((t.name for t in targets if t.kind == "clearwall"), None)
    head = ["target", "mode", "clients", "req/s", "p50 ms", "p99 ms", "errors", "proxy CPU",
            "CPU ms/req", "other CPU", "req/s vs mitmdump", "CPU/req vs mitmdump"]
    head += [f"req/s vs {first_variant}"] if first_variant else []
    rows = [head]
    for cell in cells.values():
        base = cells.get(("mitmdump", cell.mode, cell.clients))
        if cell.failure:
            rows.append([cell.target, cell.mode, str(cell.clients), "FAILED"]
                        + ["-"] * (len(head) - 4))
            continue
        med = {a: cell.median(a) for a in ("rps", "p50_ms", "p99_ms", "proxy_cpu",
                                           "proxy_ms_per_request", "other_cpu")}
        row = [cell.target, cell.mode, str(cell.clients)] + [
            "-" if med[a] is None else f"{med[a]:.{d}f}"
            for a, d in (("rps", 1), ("p50_ms", 2), ("p99_ms", 2))]
        row += [str(cell.errors), _pct(med["proxy_cpu"]),
                "-" if med["proxy_ms_per_request"] is None else f"{med['proxy_ms_per_request']:.2f}",
                _pct(med["other_cpu"]), ratio(cell, base), ratio(cell, base, "proxy_ms_per_request")]
        if first_variant:
            row.append(ratio(cell, cells.get((first_variant, cell.mode, cell.clients))))
        rows.append(row)
    return rows


def format_table(cells: dict[Key, Cell], targets: list[Target]) -> str:
    rows = table_rows(cells, targets)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _pct(cores: float | None) -> str:
    return "-" if cores is None else f"{cores * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def problems(cells: dict[Key, Cell]) -> list[str]:
    out, failed = [], set()
    for cell in cells.values():
        if cell.failure:
            if cell.target not in failed:  # one start failure, however many modes it cost
                failed.add(cell.target)
                out.append(f"{cell.target} did not run: {cell.detail or cell.failure}")
        elif cell.errors:
            samples = sum((r.error_samples for r in cell.runs), Counter())
            detail = "; ".join(f"{n}x {msg}" for msg, n in samples.most_common(5))
            out.append(f"{cell.target} {cell.mode} {cell.clients} clients: {cell.errors} failed "
                       f"requests: {detail}")
        out.extend(f"{cell.target}: {message}" for message in cell.unlogged)
    return out


def revision() -> str:
    """The Clearwall source measured: commit, and whether the package had local changes."""
    root = HERE.parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "addons"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" with local changes in addons/" if dirty else "")


def machine() -> str:
    try:
        from mitmproxy.version import VERSION as mitm
    except ImportError:
        mitm = "?"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"mitmproxy {mitm}, load generator on {loop}, load average "
            f"{os.getloadavg()[0]:.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench proxy", description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--clients", type=parse_clients, default=[16], metavar="N[,N...]",
                   help="concurrent connections/workers; a list runs each (e.g. 1,16)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians reported")
    p.add_argument("--body-bytes", type=int, default=0, help="request body (JSON POST); 0: GET")
    p.add_argument("--response-bytes", type=int, default=4096, help="upstream JSON answer size")
    p.add_argument("--targets", default=",".join(KINDS), help="comma-separated: mitmdump,clearwall")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=RULES",
                   help="a clearwall rule file or directory to compare (repeatable); "
                        f"default: {DEFAULT_RULES.relative_to(HERE.parent.parent)}")
    p.add_argument("--clearwall-cmd", default=f"{shlex.quote(sys.executable)} -m clearwall",
                   help="how to start clearwall (its `run ...` arguments are appended)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, mitm_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    parser = build_parser()
    args = parser.parse_args(ours)
    try:
        targets = expand_targets(parse_targets(args.targets), [parse_variant(v) for v in args.variant])
        LoadSpec(("localhost", 1), "", None, "keepalive", args.clients[0], args.duration,
                 args.warmup, args.body_bytes)  # validates the load options before any start
        if args.rounds < 1 or args.response_bytes < 0:
            raise ValueError("--rounds must be >= 1 and --response-bytes >= 0")
    except ValueError as e:
        parser.error(str(e))
    command = "scripts/bench proxy " + shlex.join(argv)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    host, source = machine(), revision()
    log(f"$ {command}\nmachine: {host}\nclearwall source: {source}")
    with tempfile.TemporaryDirectory(prefix="clearwall-bench-") as tmp:
        try:
            cells = run_bench(args, mitm_args, targets, Path(tmp), log=log)
        except RuntimeError as e:  # the bench's own upstream did not start: nothing to measure
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
    issues = problems(cells)
    if args.json:
        print(json.dumps({"command": command, "machine": host, "source": source, "cells": [
            {"target": c.target, "mode": c.mode, "clients": c.clients, "failure": c.failure, "errors": c.errors,
             "median": {a: c.median(a) for a in ("rps", "p50_ms", "p99_ms", "proxy_cpu",
                                                 "proxy_ms_per_request", "client_cpu",
                                                 "other_cpu")},
             "runs": [r.summary() for r in c.runs]} for c in cells.values()]}, indent=2))
    else:
        print(f"\n{format_table(cells, targets)}")
    busiest = max((r.other_cpu for c in cells.values() for r in c.runs if r.other_cpu is not None),
                  default=0.0)
    if busiest > NOISY_OTHER_CPU:
        print(f"WARNING: other work on this machine used up to {busiest:.1f} cores during a run: "
              "the figures are noisy; use --rounds 3 or more, or a quiet machine", file=sys.stderr)
    for issue in issues:
        print(f"ERROR: {issue}", file=sys.stderr)
    if issues:
        print("these figures are NOT valid: a target failed or requests failed", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
