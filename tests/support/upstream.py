"""A real HTTPS (or plain HTTP) upstream on 127.0.0.1 that records every request it receives.

Tests assert on `upstream.requests` to prove what did and did not reach the destination.
Routes map a path prefix to a handler `(RecordedRequest) -> Reply`; the default echoes a small
JSON document.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.certs import TestPKI


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw_headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Reply:
    status: int = 200
    body: bytes | Iterable[tuple[float, bytes]] = b""  # an iterable of (delay, chunk) streams chunked
    headers: dict[str, str] = field(default_factory=dict)


def echo(req: RecordedRequest) -> Reply:
    doc = {"ok": True, "method": req.method, "path": req.path, "received_bytes": len(req.body)}
    return Reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY each response waits ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner.connections.append(self.client_address)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        body = self._read_body()
        req = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                              list(self.headers.items()))
        self.server.owner.requests.append(req)
        handler = self.server.owner.route(req.path)
        reply = handler(req)
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        if isinstance(reply.body, (bytes, bytearray)):
            if "Content-Length" not in reply.headers:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        else:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for delay, chunk in reply.body:
                time.sleep(delay)
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Upstream


class Upstream:
    """`with Upstream(pki) as up:` serves on 127.0.0.1:<free port> until the block ends."""

    def __init__(self, pki: TestPKI | None, routes: dict[str, Callable[[RecordedRequest], Reply]] | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections: list[tuple[str, int]] = []  # one entry per TCP connection accepted
        self.routes = dict(routes or {})
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def route(self, path: str) -> Callable[[RecordedRequest], Reply]:
        best = max((p for p in self.routes if path.startswith(p)), key=len, default=None)
        return self.routes[best] if best is not None else echo

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self, needle: bytes | str) -> bool:
        """Did any request (path, headers or body) carry `needle`?"""
        n = needle.encode() if isinstance(needle, str) else needle
        return any(n in r.path.encode() or n in r.body or any(n in v.encode() for v in r.headers.values())
                   for r in self.requests)
