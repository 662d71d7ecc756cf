"""WebSocket messages through the real proxy with the `websockets` client and server (TLS upstream)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.proxy import Proxy

AWS = "AKIAPYCDYBK377OXTZQ6"

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
filters:
  - name: aws-access-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{{16}}\\b'
    where: [websocket]
    action: block
  - name: email-address
    pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+'
    where: [websocket]
    action: redact
"""


class WsUpstream:
    """A TLS WebSocket server: echoes messages; `leak` makes it send a secret; records what it got."""

    def __init__(self, pki) -> None:
        self.received: list[str | bytes] = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handler(self, ws) -> None:
        async for msg in ws:
            self.received.append(msg)
            if msg == "leak":
                await ws.send(f"here is {AWS}")
            else:
                await ws.send(f"echo: {msg}" if isinstance(msg, str) else b"echo: " + msg)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main():
            async with serve(self._handler, "127.0.0.1", 0, ssl=self.ctx) as server:
                self.port = server.sockets[0].getsockname()[1]
                self._stop = asyncio.get_running_loop().create_future()
                self._ready.set()
                await self._stop

        self._loop.run_until_complete(main())

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


@pytest.fixture(scope="module")
def up(pki):
    with WsUpstream(pki) as u:
        yield u


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, up):
    with Proxy(tmp_path_factory.mktemp("ws"), RULES.format(ca=pki.ca_pem, port=up.port)) as p:
        yield p


def ws(proxy, up):
    ctx = ssl.create_default_context(cafile=str(proxy.ca_cert))
    return connect(f"wss://api.example.test:{up.port}/chat", proxy=proxy.url, ssl=ctx, open_timeout=20,
                   close_timeout=10)


def ws_record(proxy, n_before: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in proxy.records()[n_before:] if "websocket" in r]
        if recs:
            return recs[-1]
        time.sleep(0.1)
    raise AssertionError("no WebSocket record")


def test_clean_messages_flow_both_ways_and_are_logged(proxy, up):
    n = len(proxy.records())
    with ws(proxy, up) as c:
        c.send("hello")
        assert c.recv(timeout=10) == "echo: hello"
        c.send(b"\x00\x01binary")
        assert c.recv(timeout=10) == b"echo: \x00\x01binary"
    rec = ws_record(proxy, n)
    msgs = rec["websocket"]["messages"]
    assert [(m["direction"], m["action"]) for m in msgs] == [("client", "allowed"), ("server", "allowed")] * 2
    assert msgs[0]["content"]["content"] == "hello" and msgs[1]["content"]["content"] == "echo: hello"
    assert rec["event"]["action"] == "allowed" and rec["http"]["response"]["status_code"] == 101


def test_a_message_with_a_secret_is_dropped_and_the_connection_closed_with_1008(proxy, up):
    n = len(proxy.records())
    with ws(proxy, up) as c:
        c.send("fine")
        assert c.recv(timeout=10) == "echo: fine"
        c.send(f"my key is {AWS}")
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert not any(AWS in str(m) for m in up.received)
    rec = ws_record(proxy, n)
    actions = [(m["direction"], m["action"]) for m in rec["websocket"]["messages"]]
    assert actions == [("client", "allowed"), ("server", "allowed"), ("client", "blocked")]
    assert rec["event"]["action"] == "blocked" and "aws-access-key" in rec["rule"]["name"]


def test_a_secret_from_the_server_never_reaches_the_client(proxy, up):
    with ws(proxy, up) as c:
        c.send("leak")
        with pytest.raises(ConnectionClosed) as closed:
            got = c.recv(timeout=10)
            assert AWS not in got
    assert closed.value.rcvd.code == 1008


def test_redact_rewrites_the_message_the_server_receives(proxy, up):
    with ws(proxy, up) as c:
        c.send("mail bob@example.com")
        assert c.recv(timeout=10) == "echo: mail [REDACTED:email-address]"
    assert "mail [REDACTED:email-address]" in up.received


def test_a_secret_split_across_fragments_is_reassembled_and_blocked(proxy, up):
    with ws(proxy, up) as c:
        c.send(["key ", AWS[:10], AWS[10:], " end"])
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    assert not any(AWS in str(m) for m in up.received)


def test_a_large_message_is_scanned_too(proxy, up):
    big = "x " * 100_000
    with ws(proxy, up) as c:
        c.send(big)
        assert c.recv(timeout=20) == "echo: " + big
        c.send(big + AWS)
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=20)
    assert closed.value.rcvd.code == 1008


def test_a_crashing_message_hook_drops_the_message_and_closes_with_1008(tmp_path, pki, up):
    """Fail closed under `mitmdump -s` with a fault injected into message inspection."""
    import subprocess
    import sys
    from pathlib import Path

    import clearwall.script
    from tests.support.proxy import free_port, wait_port

    ca_dir = tmp_path / "ca"
    subprocess.run([sys.executable, "-m", "clearwall", "ca", "init", "--dir", str(ca_dir)], check=True, capture_output=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(ca=pki.ca_pem, port=up.port))
    port = free_port()
    fault = Path(__file__).parent / "scripts" / "ws_fault.py"
    mitmdump = Path(sys.executable).parent / "mitmdump"
    proc = subprocess.Popen([str(mitmdump), "-q", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                             "--set", f"confdir={ca_dir}", "--set", f"clearwall_rules={rules}",
                             "--set", f"clearwall_log_dir={tmp_path / 'logs'}",
                             "-s", clearwall.script.__file__, "-s", str(fault)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)

        class P:
            url = f"http://127.0.0.1:{port}"
            ca_cert = ca_dir / "mitmproxy-ca-cert.pem"

        before = list(up.received)
        with ws(P, up) as c:
            c.send("must-not-pass")
            with pytest.raises(ConnectionClosed) as closed:
                c.recv(timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "must-not-pass" not in up.received[len(before):]
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0].decode(errors="replace")
    assert "injected websocket fault" in out
