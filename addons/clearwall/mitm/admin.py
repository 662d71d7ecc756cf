"""The admin endpoint (SPEC §6): /metrics, /healthz, /readyz and /rules on `--admin HOST:PORT`.

A deliberately tiny HTTP/1.1 server on the proxy's own event loop (no framework, no extra
thread): GET only, one request per connection, bounded request head, a read timeout, so a slow
or hostile scraper cannot hold resources. Rendering the metrics text runs in a thread.

/metrics and /rules reveal rule names and traffic volumes: when `CLEARWALL_ADMIN_TOKEN` is set
they require `Authorization: Bearer <token>`. /healthz and /readyz stay open so orchestrator
probes need no secret; they say only "ok" or which check failed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from pathlib import Path

from mitmproxy import ctx

from clearwall.mitm.runtime import Runtime

log = logging.getLogger("clearwall")
TOKEN_ENV = "CLEARWALL_ADMIN_TOKEN"
MAX_HEAD = 8192
READ_TIMEOUT = 5.0
PROTECTED = {"/metrics", "/rules"}
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
           503: "Service Unavailable", 500: "Internal Server Error"}
PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers of an HTTP/1.x request head; ValueError when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"malformed request line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("malformed header line")
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


def authorized(headers: dict[str, str], token: str | None) -> bool:
    if not token:
        return True
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


class AdminServer:
    """Serves one Runtime; `start()`/`stop()` on the running event loop."""

    def __init__(self, runtime: Runtime, host: str, port: int, token: str | None = None,
                 ca_cert: Path | None = None) -> None:
        self.runtime, self.host, self.port = runtime, host, port
        self.token = token
        self.ca_cert = ca_cert
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        log.info("admin endpoint on http://%s:%d/ (/metrics, /healthz, /readyz, /rules)%s", self.host, self.port,
                 "; bearer token required for /metrics and /rules" if self.token else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
                method, path, headers = parse_head(head[:-4])
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
                return await self._send(writer, 400, {"error": "bad request"})
            status, body, ctype = await self.handle(method, path, headers)
            await self._send(writer, status, body, ctype, head_only=method == "HEAD")
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("admin endpoint error")
            try:
                await self._send(writer, 500, {"error": "internal error"})
            except Exception:
                pass
        finally:
            writer.close()

    async def handle(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, object, str]:
        if method not in ("GET", "HEAD"):
            return 405, {"error": "only GET"}, ""
        if path in PROTECTED and not authorized(headers, self.token):
            return 401, {"error": "bearer token required"}, ""
        if path == "/metrics":
            if self.runtime.metrics is None:
                return 404, {"error": "metrics are off"}, ""
            return 200, await asyncio.to_thread(self.runtime.metrics.text), PROM_TYPE
        if path == "/healthz":
            return 200, {"status": "ok"}, ""
        if path == "/readyz":
            checks = self.readiness()
            return (200 if all(checks.values()) else 503), {"ready": all(checks.values()), "checks": checks}, ""
        if path == "/rules":
            return 200, self.rules_doc(), ""
        return 404, {"error": "not found", "endpoints": ["/metrics", "/healthz", "/readyz", "/rules"]}, ""

    def readiness(self) -> dict[str, bool]:
        w = self.runtime.writer
        return {
            "rules_loaded": self.runtime.rules is not None,
            "ca_readable": self.ca_cert is None or os.access(self.ca_cert, os.R_OK),
            "log_writable": w is not None and bool(w.writable),
        }

    def rules_doc(self) -> dict:
        rules = self.runtime.rules
        return {
            "version": rules.version if rules else None,
            "summary": rules.summary() if rules else None,
            "last_reload_error": self.runtime.last_reload_error,
        }

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, body: object, ctype: str = "",
                    head_only: bool = False) -> None:
        data = body if isinstance(body, bytes) else (json.dumps(body, indent=1) + "\n").encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype or 'application/json'}\r\n"
                f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + (b"" if head_only else data))
        await writer.drain()


class Admin:
    """The addon: starts the admin server once the proxy runs (None address: off)."""

    name = "clearwall-admin"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server: AdminServer | None = None

    async def running(self) -> None:
        if self.runtime.admin is None or self.server is not None:
            return
        host, port = self.runtime.admin
        confdir = Path(os.path.expanduser(ctx.options.confdir))
        self.server = AdminServer(self.runtime, host, port, os.environ.get(TOKEN_ENV) or None,
                                  confdir / "mitmproxy-ca.pem")
        await self.server.start()

    async def done(self) -> None:
        if self.server is not None:
            await self.server.stop()
