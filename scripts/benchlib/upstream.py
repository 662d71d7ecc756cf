"""A fast local HTTPS upstream for the proxy benchmark.

It answers every request with one fixed JSON body, so that what the benchmark measures is the
proxy in between, not the server. It runs in its own process (`UpstreamProcess`) so that its CPU
is not taken from the load generator's event loop, and it has its own throwaway CA so that the
proxy under test verifies it exactly as it would verify a real upstream.

    python -m benchlib.upstream --tls-dir DIR [--port 0] [--response-bytes 4096]

prints `READY <port>` on stdout once it accepts connections and serves until SIGTERM/SIGINT.
A request to `/status/NNN` is answered with status NNN (to test error accounting).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import os
import signal
import ssl
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
_FILLER = b"the quick brown fox jumps over the lazy dog "
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Content Too Large",
            501: "Not Implemented"}


def json_body(size: int) -> bytes:
    """A JSON document of exactly `size` bytes, made of ordinary words (not one repeated byte,
    which would flatter or penalise content scanners)."""
    if size < 0:
        raise ValueError(f"body size must be >= 0, got {size}")
    if size == 0:
        return b""
    if size < 12:
        return (b"{}" + b" " * (size - 2)) if size >= 2 else b"0"
    head, tail = b'{"data":"', b'"}'
    room = size - len(head) - len(tail)
    pad = (_FILLER * (room // len(_FILLER) + 1))[:room]
    return head + pad + tail


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    content_length: int
    keep_alive: bool


def parse_request_head(head: bytes) -> RequestHead:
    """Parse an HTTP/1.1 request head (without the blank line). Raises ValueError on anything
    this server does not support, including Transfer-Encoding (the benchmark always sends
    Content-Length, and so does mitmproxy for a buffered body)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ValueError(f"bad request line {lines[0][:100]!r}")
    length, keep_alive = 0, parts[2] == b"HTTP/1.1"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"bad header line {line[:100]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative Content-Length")
        elif name == b"transfer-encoding":
            raise ValueError("Transfer-Encoding is not supported")
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
    return RequestHead(parts[0].decode("ascii"), parts[1].decode("ascii", "replace"), length,
                       keep_alive)


def build_response(status: int, body: bytes, close: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n")
    return head.encode("ascii") + body


class _HTTPProtocol(asyncio.Protocol):
    """One connection: parse requests from a buffer and answer each with the prebuilt response.
    A protocol (not streams) because it is several times cheaper per request."""

    def __init__(self, ok_response: bytes, max_body: int) -> None:
        self._ok = ok_response
        self._max_body = max_body
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    self._fail(400)
                return
            try:
                req = parse_request_head(bytes(self._buf[:end]))
            except ValueError:
                self._fail(400 if b"transfer-encoding" not in self._buf[:end].lower() else 501)
                return
            if req.content_length > self._max_body:
                self._fail(413)
                return
            total = end + 4 + req.content_length
            if len(self._buf) < total:
                return
            del self._buf[:total]
            self._answer(req)

    def _answer(self, req: RequestHead) -> None:
        if req.target.startswith("/status/"):
            try:
                status = int(req.target[len("/status/"):])
            except ValueError:
                status = 400
            response = build_response(status, json_body(64), close=not req.keep_alive)
        elif req.keep_alive:
            response = self._ok
        else:
            response = self._ok.replace(b"Connection: keep-alive", b"Connection: close", 1)
        self._transport.write(response)
        if not req.keep_alive:
            self._transport.close()
            self._transport = None

    def _fail(self, status: int) -> None:
        self._transport.write(build_response(status, b"", close=True))
        self._transport.close()
        self._transport = None

    def connection_lost(self, exc) -> None:
        self._transport = None


@dataclass(frozen=True)
class TLSMaterial:
    ca_cert: Path
    cert: Path
    key: Path


def write_tls_material(directory: Path, days: int = 2) -> TLSMaterial:
    """A throwaway CA and a leaf for localhost/127.0.0.1 signed by it (EC P-256, with the CA's
    Subject Key Identifier derived from its key so strict verifiers accept the chain)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=days)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clearwall bench upstream CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(until)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    tls = TLSMaterial(directory / "upstream-ca.pem", directory / "upstream.pem",
                      directory / "upstream-key.pem")
    tls.ca_cert.write_bytes(ca.public_bytes(pem))
    tls.cert.write_bytes(leaf.public_bytes(pem))
    tls.key.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    os.chmod(tls.key, 0o600)
    return tls


async def serve(host: str, port: int, tls: TLSMaterial, response_bytes: int,
                max_body: int = DEFAULT_MAX_BODY_BYTES) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    ctx.set_alpn_protocols(["http/1.1"])
    ok = build_response(200, json_body(response_bytes))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HTTPProtocol(ok, max_body), host, port, ssl=ctx,
                                      backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await stop.wait()


def run_loop(coro):
    """Run `coro` on uvloop when it is installed (less CPU per request), else plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


class UpstreamProcess:
    """The upstream in a child process; a context manager yielding itself with `.port` set."""

    def __init__(self, tls_dir: Path, response_bytes: int = 4096, start_timeout: float = 20.0):
        self.tls = write_tls_material(Path(tls_dir))
        self.response_bytes = response_bytes
        self.start_timeout = start_timeout
        self.port = 0
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "UpstreamProcess":
        scripts = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (scripts, os.environ.get("PYTHONPATH")) if p))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchlib.upstream", "--tls-dir", str(self.tls.cert.parent),
             "--response-bytes", str(self.response_bytes)],
            stdout=subprocess.PIPE, env=env, text=True)
        # The child prints READY once it listens, or dies; do not wait forever for either.
        ready, _, _ = select.select([self._proc.stdout], [], [], self.start_timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            self.__exit__()
            raise RuntimeError(f"bench upstream failed to start (said {line.strip()!r})")
        self.port = int(line.split()[1])
        return self

    @property
    def pid(self) -> int:
        return self._proc.pid

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stdout:
            self._proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.upstream", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-dir", type=Path, required=True,
                   help="directory holding upstream-ca.pem/upstream.pem/upstream-key.pem "
                        "(created when missing)")
    p.add_argument("--response-bytes", type=int, default=4096)
    args = p.parse_args(argv)
    tls = TLSMaterial(args.tls_dir / "upstream-ca.pem", args.tls_dir / "upstream.pem",
                      args.tls_dir / "upstream-key.pem")
    if not tls.key.exists():
        tls = write_tls_material(args.tls_dir)
    run_loop(serve(args.host, args.port, tls, args.response_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
