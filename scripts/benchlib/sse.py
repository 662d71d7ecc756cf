"""`scripts/bench sse`: Server-Sent Events through `clearwall run` — throughput and added latency.

    scripts/bench sse [--events 20000] [--event-bytes 200] [--latency-events 100]
                      [--interval 0.02] [--rounds 3] [--json]

A local TLS upstream (its own process, throwaway CA) streams `data:` events. The same client
reads them directly and through the proxy (rules: the shipped secrets library plus an email
redaction, all applied to `sse`), so each event is reassembled, scanned and forwarded:
- throughput: one stream of N events sent as fast as the server can write, events/s and MiB/s
  at the client;
- latency: events sent every `interval` seconds, each stamped with its send time; the client
  records arrival - send per event. The added latency is proxy minus direct (medians, p99).
Medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.upstream import TLSMaterial, write_tls_material

ROOT = Path(__file__).resolve().parents[2]
HOST = "localhost"  # the bench upstream leaf names localhost
RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{{host}: 127.0.0.1}}
destinations:
  - name: sse-upstream
    hosts: [{host}]
    ports: [{port}]
"""
FILTERS = """
filters:
  - include: {root}/rules/patterns/secrets.yaml
  - name: email-address
    pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+'
    where: [sse]
    action: redact
"""


# ----- upstream (child process) ------------------------------------------------------------

async def _stream(reader, writer) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ", 2)[1].decode()
    q = dict(p.split("=") for p in path.split("?", 1)[1].split("&"))
    n, size, interval = int(q["n"]), int(q["size"]), float(q["interval"])
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    filler = ("the quick brown fox jumps over the lazy dog " * (size // 44 + 1))
    for i in range(n):
        stamp = f"{time.time():.6f}"
        ev = f"id: {i}\ndata: {stamp} {filler[:max(0, size - len(stamp) - 16)]}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(ev), ev))
        if interval:
            await writer.drain()
            await asyncio.sleep(interval)
        elif i % 64 == 0:
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    writer.close()


async def _serve(tls: TLSMaterial) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    server = await asyncio.start_server(_stream, "127.0.0.1", 0, ssl=ctx)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


# ----- client ------------------------------------------------------------------------------

def _open(port: int, proxy_port: int | None, ca: Path) -> ssl.SSLSocket:
    if proxy_port is None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    else:
        sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=60)
        sock.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            resp += sock.recv(4096)
        if b" 200 " not in resp.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"CONNECT refused: {resp[:200]!r}")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = proxy_port is not None  # direct: the upstream leaf names localhost only
    if proxy_port is None:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(sock, server_hostname=HOST)


def read_events(port: int, proxy_port: int | None, ca: Path, n: int, size: int, interval: float):
    """(seconds from request to last event, [arrival - send per event])."""
    s = _open(port, proxy_port, ca)
    t0 = time.monotonic()
    s.sendall(f"GET /s?n={n}&size={size}&interval={interval} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    buf, got, delays = b"", 0, []
    while got < n:
        data = s.recv(1 << 16)
        if not data:
            break
        now = time.time()
        buf += data
        *events, buf = buf.split(b"\n\n")
        for ev in events:
            i = ev.find(b"data: ")
            if i < 0:
                continue
            got += 1
            if interval:
                delays.append(now - float(ev[i + 6:].split(b" ", 1)[0]))
    elapsed = time.monotonic() - t0
    s.close()
    if got < n:
        raise RuntimeError(f"stream ended after {got} of {n} events: {buf[:300]!r}")
    return elapsed, delays


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def measure(args, port: int, proxy_port: int | None, ca: Path) -> dict:
    elapsed, _ = read_events(port, proxy_port, ca, args.events, args.event_bytes, 0)
    _, delays = read_events(port, proxy_port, ca, args.latency_events, args.event_bytes, args.interval)
    return {"events_per_s": args.events / elapsed, "mib_per_s": args.events * args.event_bytes / elapsed / 2**20,
            "latency_p50_ms": statistics.median(delays) * 1e3, "latency_p99_ms": _pct(delays, 0.99) * 1e3}


def _start(cmd: list[str], log: Path | None = None) -> subprocess.Popen:
    err = open(log, "w") if log else subprocess.DEVNULL  # a pipe nobody reads could fill and stall it
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"clearwall exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("clearwall did not start")


def run(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    tls = write_tls_material(work / "tls")
    up = _start([sys.executable, "-m", "benchlib.sse", "--serve", str(work / "tls")])
    port = int(up.stdout.readline().split()[1])
    rules = work / "rules.yaml"
    rules.write_text(RULES.format(ca=tls.ca_cert, host=HOST, port=port)
                     + ("" if args.no_filters else FILTERS.format(root=ROOT)))
    pport = _free_port()
    proxy = _start([sys.executable, "-m", "clearwall", "run", "--rules", str(rules), "--listen", f"127.0.0.1:{pport}",
                    "--admin", f"127.0.0.1:{_free_port()}", "--ca-dir", str(work / "ca"), "--log-dir", str(work / "logs")],
                   log=work / "clearwall.err")
    try:
        _wait_port(pport, proxy)
        rounds = {"direct": [], "clearwall": []}
        for _ in range(args.rounds):
            rounds["direct"].append(measure(args, port, None, tls.ca_cert))
            rounds["clearwall"].append(measure(args, port, pport, work / "ca" / "mitmproxy-ca-cert.pem"))
    finally:
        for p in (proxy, up):
            p.send_signal(signal.SIGTERM)
            p.wait(30)
    out = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in rounds.items()}
    out["added_latency_p50_ms"] = out["clearwall"]["latency_p50_ms"] - out["direct"]["latency_p50_ms"]
    out["added_latency_p99_ms"] = out["clearwall"]["latency_p99_ms"] - out["direct"]["latency_p99_ms"]
    out["settings"] = vars(args) | {"cpus": os.cpu_count()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench sse", description=__doc__.split("\n")[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--event-bytes", type=int, default=200)
    ap.add_argument("--latency-events", type=int, default=100)
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-filters", action="store_true", help="streaming alone, no content filters")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.serve:
        d = Path(args.serve)
        asyncio.run(_serve(TLSMaterial(d / "upstream-ca.pem", d / "upstream.pem", d / "upstream-key.pem")))
        return 0
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"SSE, {args.events} events of {args.event_bytes} B; latency over {args.latency_events} events "
          f"every {args.interval * 1e3:.0f} ms; median of {args.rounds} rounds")
    print(f"{'target':<10} {'events/s':>10} {'MiB/s':>8} {'lat p50 ms':>11} {'lat p99 ms':>11}")
    for name in ("direct", "clearwall"):
        r = result[name]
        print(f"{name:<10} {r['events_per_s']:>10.0f} {r['mib_per_s']:>8.2f} {r['latency_p50_ms']:>11.2f} "
              f"{r['latency_p99_ms']:>11.2f}")
    print(f"added latency per event: p50 {result['added_latency_p50_ms']:.2f} ms, "
          f"p99 {result['added_latency_p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
