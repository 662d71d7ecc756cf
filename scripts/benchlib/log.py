"""Body-log writer benchmark: records/s with 4 KiB bodies, and submit() latency.

    scripts/bench log [--records N] [--body BYTES] [--bodies 1|2] [--fsync every|interval|never] [--runs N] [--dir D] [--json]

Throughput is measured from the first submit() to the end of close() (everything written
and fsynced), for ready-made record dicts and for Exchanges built in the writer thread (what
the proxy adapter submits). Latency is the caller-side time of submit() while the writer is
busy, as the event loop would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from clearwall.audit.errors import LogBackpressure
from clearwall.audit.record import Exchange, build_record
from clearwall.audit.writer import LogWriter

TARGET = 20_000


def exchange(i: int, body: bytes, response: bytes) -> Exchange:
    return Exchange(
        timestamp=time.time(), flow_id=f"bench-{i}", action="allowed", duration=0.004,
        rules=["github-api"], ruleset="v1", client_ip="10.0.3.4", client_port=50000,
        client_label="github-mcp", dest_domain="api.github.com", dest_port=443,
        url=f"https://api.github.com/repos/o/r/issues/{i}", http_version="1.1", method="POST",
        request_headers=[("Content-Type", "application/json"), ("Authorization", "Bearer x")],
        request_body=body, status=200, response_headers=[("Content-Type", "application/json")],
        response_body=response,
    )


def _submit_all(w: LogWriter, items) -> None:
    for item in items:
        while True:
            try:
                w.submit(item)
                break
            except LogBackpressure:
                time.sleep(0.0005)  # the benchmark producer waits; the proxy would refuse


def _thread_cpu(w: LogWriter) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(w._thread.ident))


def throughput(n: int, make, fsync: str, log_dir: str | None) -> dict:
    """Records/s from the first submit() until every record is written (and, for
    `with_close`, until close() has fsynced and compressed every rotated file)."""
    d = Path(tempfile.mkdtemp(prefix="clearwall-bench-log-", dir=log_dir))
    try:
        items = [make(i) for i in range(n)]
        w = LogWriter(d, fsync=fsync, max_queue=10000)
        w.start()
        cpu0 = _thread_cpu(w)
        t0 = time.perf_counter()
        _submit_all(w, items)
        while w.records_written < n:
            time.sleep(0.001)
        written = time.perf_counter() - t0
        cpu = _thread_cpu(w) - cpu0
        w.close(timeout=300)
        closed = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in d.iterdir() if f.name == "flows.jsonl") + w.rotations * w.rotate_bytes
        return {
            "records_per_s": n / written,
            "records_per_cpu_s": n / cpu,  # what the writer thread sustains with a core to itself
            "records_per_s_with_close": n / closed,
            "bytes_per_record": size / n,
            "rotations": w.rotations,
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def latency(n: int, make, fsync: str, log_dir: str | None) -> dict:
    d = Path(tempfile.mkdtemp(prefix="clearwall-bench-log-", dir=log_dir))
    try:
        w = LogWriter(d, fsync=fsync, max_queue=n + 1)
        w.start()
        items = [make(i) for i in range(n)]
        samples = []
        for item in items:
            t = time.perf_counter_ns()
            w.submit(item)
            samples.append(time.perf_counter_ns() - t)
            if len(samples) % 100 == 0:
                time.sleep(0.001)  # paced like traffic, so the writer runs concurrently
        w.close(timeout=120)
        samples.sort()
        pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000
        return {"p50_us": pick(0.50), "p99_us": pick(0.99), "max_us": samples[-1] / 1000}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _summary(runs: list[dict]) -> dict:
    """Best and median of each figure over the runs (a shared machine is noisy: one run says
    little, the median says what to expect, the best what the code can do)."""
    return {
        key: {"best": max(r[key] for r in runs), "median": statistics.median(r[key] for r in runs)}
        for key in ("records_per_s", "records_per_cpu_s", "records_per_s_with_close")
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench log", description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=50_000)
    p.add_argument("--body", type=int, default=4096, help="body size in bytes (default 4096)")
    p.add_argument("--bodies", type=int, choices=[1, 2], default=1,
                   help="1: request body of --body bytes and a short response; 2: both of --body bytes")
    p.add_argument("--fsync", default="interval", choices=["every", "interval", "never"])
    p.add_argument("--runs", type=int, default=3, help="interleaved runs; best and median are reported (default 3)")
    p.add_argument("--dir", help="where to create the scratch log directory (default: system temp)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    body = (b'{"data":"' + os.urandom(args.body).hex().encode())[: args.body - 2] + b'"}'
    response = body if args.bodies == 2 else b'{"jsonrpc":"2.0","id":1,"result":{"ok":true}}'
    make_ex = lambda i: exchange(i, body, response)
    make_dict = lambda i: build_record(exchange(i, body, response))
    dicts, exchanges, lats = [], [], []
    for _ in range(args.runs):
        dicts.append(throughput(args.records, make_dict, args.fsync, args.dir))
        exchanges.append(throughput(args.records, make_ex, args.fsync, args.dir))
        lats.append(latency(min(args.records, 20_000), make_ex, args.fsync, args.dir))
    lat = {k: statistics.median(r[k] for r in lats) for k in lats[0]}
    result = {"records": args.records, "body_bytes": args.body, "bodies": args.bodies, "fsync": args.fsync,
              "runs": args.runs, "bytes_per_record": dicts[0]["bytes_per_record"], "dicts": _summary(dicts), "exchanges": _summary(exchanges),
              "submit_latency": lat, "target_records_per_s": TARGET,
              "load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"body log writer: {args.records} records of ~{result['bytes_per_record']:.0f} B "
          f"({args.bodies} body(ies) of {args.body} B), fsync={args.fsync}, best / median of {args.runs} run(s), "
          f"load average {result['load_average']:.1f} on {result['cpus']} CPUs")
    for name, r in (("record dicts", result["dicts"]), ("Exchanges (built in writer)", result["exchanges"])):
        wall, cpu, closed = r["records_per_s"], r["records_per_cpu_s"], r["records_per_s_with_close"]
        ok = "ok" if wall["median"] >= TARGET else "below"
        print(f"  {name:<28} {wall['best']:>7,.0f} / {wall['median']:>7,.0f} records/s wall ({ok} vs {TARGET:,} at the median)"
              f"  {cpu['best']:>7,.0f} / {cpu['median']:>7,.0f} per writer-CPU-second"
              f"  {closed['best']:>7,.0f} / {closed['median']:>7,.0f} incl. close+compression")
    print(f"  submit() latency (caller, median of runs)  p50 {lat['p50_us']:.1f} µs  p99 {lat['p99_us']:.1f} µs"
          f"  max {lat['max_us']:.0f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
