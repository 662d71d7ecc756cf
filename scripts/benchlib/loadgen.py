"""HTTPS load generator that goes through a forward proxy the way MCP servers do: CONNECT, then
TLS to the proxy's minted certificate (verified against the proxy's CA), then HTTP/1.1 requests.

Modes: `keepalive` (N connections, each sending requests back to back) and `newconn` (N workers,
each request on a fresh CONNECT + TLS connection). Raw asyncio streams and a hand-written HTTP/1.1
client keep the generator's own CPU small next to the proxy's on a 2-core machine; its CPU use is
reported (`client_cpu`) so a saturated generator is visible.

A non-2xx answer, a refused CONNECT, a timeout or any failed request is an error: it is counted,
a sample of each distinct message is kept, and callers must not present such a run as clean.

    python -m benchlib.loadgen --target localhost:8443 --cafile CA.pem [--proxy 127.0.0.1:8080]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from benchlib.upstream import json_body, run_loop

MODES = ("keepalive", "newconn")
MAX_ERROR_SAMPLES = 20
_ERROR_BACKOFF = 0.01  # after a failure, so a dead proxy does not become a busy loop


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; NaN when empty."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class LoadSpec:
    target: tuple[str, int]
    cafile: str                        # trust anchor: the proxy's CA, or the upstream's when direct
    proxy: tuple[str, int] | None = None
    mode: str = "keepalive"
    clients: int = 16
    duration: float = 10.0
    warmup: float = 1.0
    body_bytes: int = 0                # 0: GET; otherwise a JSON POST body of this size
    path: str = "/bench"
    timeout: float = 10.0              # per request, connection set-up included
    expect_bytes: int | None = None    # response body size every 2xx must have (None: any)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.duration <= 0 or self.warmup < 0 or self.timeout <= 0:
            raise ValueError("duration and timeout must be > 0 and warmup >= 0")
        if self.body_bytes < 0:
            raise ValueError(f"body bytes must be >= 0, got {self.body_bytes}")


def build_request(spec: LoadSpec, close: bool) -> bytes:
    host = f"{spec.target[0]}:{spec.target[1]}"
    conn = "close" if close else "keep-alive"
    if spec.body_bytes == 0:
        return (f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
                f"User-Agent: clearwall-bench\r\nConnection: {conn}\r\n\r\n").encode("ascii")
    body = json_body(spec.body_bytes)
    return (f"POST {spec.path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
            f"User-Agent: clearwall-bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {conn}\r\n\r\n").encode("ascii") + body


class RequestFailed(Exception):
    """One request failed; the message is what the report shows."""


def parse_response_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """(status, content length or None, chunked, connection close) of a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:100]!r}")
    length, chunked, close = None, False, parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"connection":
            close = value == b"close"
    return int(parts[1]), length, chunked, close


async def read_response(reader: asyncio.StreamReader,
                        connect: bool = False) -> tuple[int, bytes, bool]:
    """Read one response; returns (status, body, server wants the connection closed).
    A 2xx to CONNECT has no body: the tunnel starts right after its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    try:
        status, length, chunked, close = parse_response_head(head[:-4])
    except ValueError as e:
        raise RequestFailed(str(e)) from None
    if (connect and 200 <= status < 300) or status < 200 or status in (204, 304):
        return status, b"", close
    if chunked:
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunks.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(c[:-2] for c in chunks)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body, close = await reader.read(), True
    return status, body, close


async def open_connection(spec: LoadSpec, ctx: ssl.SSLContext):
    host, port = spec.target
    if spec.proxy is None:
        return await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    reader, writer = await asyncio.open_connection(*spec.proxy)
    try:
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        status, body, _ = await read_response(reader, connect=True)
        if status != 200:
            raise RequestFailed(f"CONNECT answered {status}: {body[:200].decode('utf-8', 'replace')}")
        await writer.start_tls(ctx, server_hostname=host)
    except BaseException:
        writer.transport.abort()
        raise
    return reader, writer


@dataclass
class LoadResult:
    mode: str
    clients: int
    duration: float                    # the measured window, seconds
    requests: int = 0                  # successful requests completed inside the window
    completed: int = 0                 # successful requests in all, warm-up and tail included
    errors: int = 0                    # failed requests, warm-up and tail included
    latencies: list[float] = field(default_factory=list)   # seconds, ascending once the run ends
    error_samples: Counter = field(default_factory=Counter)
    client_cpu: float = 0.0            # load generator CPU, fraction of one core, over the window
    cpu: dict[str, float | None] = field(default_factory=dict)  # probe name -> cores used in the window

    @property
    def proxy_cpu(self) -> float | None:
        return self.cpu.get("proxy")

    @property
    def proxy_ms_per_request(self) -> float | None:
        """The proxy's CPU time per successful request: what a request costs, whatever share of
        the machine the proxy got."""
        if self.proxy_cpu is None or not self.requests:
            return None
        return self.proxy_cpu * self.duration / self.requests * 1000

    @property
    def other_cpu(self) -> float | None:
        return self.cpu.get("other")

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies, 50) * 1000

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000

    def record_error(self, message: str) -> None:
        self.errors += 1
        if message in self.error_samples or len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples[message] += 1

    def summary(self) -> dict:
        return {"mode": self.mode, "clients": self.clients, "duration_s": self.duration,
                "requests": self.requests, "completed": self.completed, "rps": round(self.rps, 1),
                "p50_ms": round(self.p50_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "errors": self.errors, "error_samples": dict(self.error_samples),
                "client_cpu": round(self.client_cpu, 3),
                "cpu": {k: None if v is None else round(v, 3) for k, v in self.cpu.items()}}


class _Run:
    """Shared state of one load run: the window and the result being filled."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.ctx = ssl.create_default_context(cafile=spec.cafile)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.result = LoadResult(spec.mode, spec.clients, spec.duration)
        now = time.perf_counter()
        self.start, self.end = now + spec.warmup, now + spec.warmup + spec.duration
        self.keep_request = build_request(spec, close=False)
        self.close_request = build_request(spec, close=True)

    def record_ok(self, began: float, done: float) -> None:
        self.result.completed += 1
        if self.start <= done <= self.end:
            self.result.requests += 1
            self.result.latencies.append(done - began)

    async def exchange(self, reader, writer, request: bytes) -> bool:
        """Send one request and read its answer; True if the connection stays usable."""
        writer.write(request)
        status, body, close = await read_response(reader)
        if not 200 <= status < 300:
            raise RequestFailed(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        if self.spec.expect_bytes is not None and len(body) != self.spec.expect_bytes:
            # a proxy that answers 200 with a cut or altered body has not served the request
            raise RequestFailed(f"HTTP {status} with a {len(body)}-byte body, expected "
                                f"{self.spec.expect_bytes}")
        return not close

    async def keepalive_client(self) -> None:
        conn = None
        while time.perf_counter() < self.end:
            began = time.perf_counter()
            try:
                async with asyncio.timeout(self.spec.timeout):
                    if conn is None:
                        conn = await open_connection(self.spec, self.ctx)
                        began = time.perf_counter()  # latency is per request, set-up excluded
                    if not await self.exchange(*conn, self.keep_request):
                        conn = _close(conn)
                self.record_ok(began, time.perf_counter())
            except Exception as e:  # every failure is counted, none is fatal to the run
                conn = _close(conn)
                self.result.record_error(_describe(e))
                await asyncio.sleep(_ERROR_BACKOFF)
        _close(conn)

    async def newconn_client(self) -> None:
        while time.perf_counter() < self.end:
            began, conn = time.perf_counter(), None
            try:
                async with asyncio.timeout(self.spec.timeout):
                    conn = await open_connection(self.spec, self.ctx)
                    await self.exchange(*conn, self.close_request)
                self.record_ok(began, time.perf_counter())
            except Exception as e:
                self.result.record_error(_describe(e))
                await asyncio.sleep(_ERROR_BACKOFF)
            finally:
                _close(conn)


def _close(conn) -> None:
    if conn is not None:
        conn[1].transport.abort()  # no TLS close_notify dance: it would only add noise


def _describe(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed mid-response"
    return f"{type(e).__name__}: {e}" if not isinstance(e, RequestFailed) else str(e)


async def run_load_async(spec: LoadSpec,
                         probes: dict[str, Callable[[], float]] | None = None) -> LoadResult:
    """Run the load. Each probe returns cumulative CPU seconds (of the proxy under test, of the
    whole machine...); it is sampled at the edges of the measured window, like the generator's
    own CPU, and reported in `result.cpu` as cores used (1.0 = one core busy)."""
    probes = probes or {}
    run = _Run(spec)
    client = run.keepalive_client if spec.mode == "keepalive" else run.newconn_client
    tasks = [asyncio.create_task(client()) for _ in range(spec.clients)]
    await asyncio.sleep(max(0.0, run.start - time.perf_counter()))
    cpu0, before = time.process_time(), {k: _sample(p) for k, p in probes.items()}
    await asyncio.sleep(max(0.0, run.end - time.perf_counter()))
    cpu1, after = time.process_time(), {k: _sample(p) for k, p in probes.items()}
    await asyncio.gather(*tasks)  # each stops after its request in flight (bounded by timeout)
    run.result.client_cpu = (cpu1 - cpu0) / spec.duration
    run.result.cpu = {k: None if before[k] is None or after[k] is None
                      else (after[k] - before[k]) / spec.duration for k in probes}
    run.result.latencies.sort()
    return run.result


def _sample(probe: Callable[[], float]) -> float | None:
    try:
        return probe()
    except OSError:  # the probed process went away: its CPU is then unknown, not zero
        return None


def run_load(spec: LoadSpec, probes: dict[str, Callable[[], float]] | None = None) -> LoadResult:
    return run_loop(run_load_async(spec, probes))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--target", required=True, help="upstream HOST:PORT (also the TLS name)")
    p.add_argument("--cafile", required=True, help="CA that signs the certificate the client sees")
    p.add_argument("--proxy", help="proxy HOST:PORT; omitted: straight to the target")
    p.add_argument("--mode", choices=MODES, default="keepalive")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--body-bytes", type=int, default=0)
    p.add_argument("--path", default="/bench")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    args = p.parse_args(argv)
    try:
        spec = LoadSpec(parse_hostport(args.target), args.cafile,
                        parse_hostport(args.proxy) if args.proxy else None, args.mode, args.clients,
                        args.duration, args.warmup, args.body_bytes, args.path, args.timeout)
    except ValueError as e:
        p.error(str(e))
    result = run_load(spec)
    print(json.dumps(result.summary(), indent=2))
    return 1 if result.errors or not result.requests else 0


if __name__ == "__main__":
    sys.exit(main())
