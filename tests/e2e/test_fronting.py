"""Domain fronting and request smuggling through the real proxy: the CONNECT target, the TLS SNI,
the request target and the Host header must all name the same host, and ambiguous framing is
refused before anything reaches an upstream. Also: the proxy never proxies to itself."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.e2e.helpers import refusal, session, via_curl
from tests.support.proxy import Proxy

RULES = """
version: 1
settings:
  ssrf: {allow: [127.0.0.1/32]}
  upstream:
    ca_bundle: @CA@
    resolve: {api.example.test: 127.0.0.1, other.example.test: 127.0.0.1, self.example.test: 127.0.0.1}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [@PORT@, @PLAIN_PORT@]
  - name: other
    hosts: [other.example.test]
    ports: [@PORT@, @PLAIN_PORT@]
  - name: proxy-itself
    hosts: [127.0.0.1, self.example.test]
    ports: [@PROXY_PORT@, @ADMIN_PORT@]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream, plain_upstream):
    p = Proxy(tmp_path_factory.mktemp("fronting"), "version: 1\n")
    p.rules_path.write_text(RULES.replace("@CA@", str(pki.ca_pem)).replace("@PORT@", str(upstream.port))
                            .replace("@PLAIN_PORT@", str(plain_upstream.port)).replace("@PROXY_PORT@", str(p.port))
                            .replace("@ADMIN_PORT@", str(p.admin_port)))
    with p:
        yield p


def _read_all(s: socket.socket) -> bytes:
    data = b""
    s.settimeout(15)
    while chunk := s.recv(65536):
        data += chunk
    return data


def in_tunnel(proxy, connect: str, sni: str, raw: str) -> bytes:
    """CONNECT to `connect`, TLS with `sni` (trusting Clearwall's CA), send `raw`, read the answer."""
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    s.sendall(f"CONNECT {connect} HTTP/1.1\r\nHost: {connect}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with ctx.wrap_socket(s, server_hostname=sni) as tls:
        tls.sendall(raw.encode())
        return _read_all(tls)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def _body(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


TUNNEL_CASES = [
    # (name, sni, request head after the request line's target, expected status, rule)
    ("Host header naming an unlisted host", "api", "GET /a HTTP/1.1\r\nHost: evil.example.test", 403, "host-mismatch"),
    ("Host header naming another allowed destination", "api", "GET /a HTTP/1.1\r\nHost: other.example.test:{port}",
     403, "host-mismatch"),
    ("two Host headers", "api", "GET /a HTTP/1.1\r\nHost: api.example.test:{port}\r\nHost: other.example.test:{port}",
     403, "host-mismatch"),
    ("absolute-form target naming another host", "api",
     "GET https://other.example.test:{port}/a HTTP/1.1\r\nHost: api.example.test:{port}", 403, "host-mismatch"),
    ("TLS SNI naming another allowed destination", "other", "GET /a HTTP/1.1\r\nHost: api.example.test:{port}",
     403, "host-mismatch"),
    ("two different Content-Length headers", "api",
     "POST /a HTTP/1.1\r\nHost: api.example.test:{port}\r\nContent-Length: 3\r\nContent-Length: 5", 400, None),
    ("Content-Length and Transfer-Encoding together", "api",
     "POST /a HTTP/1.1\r\nHost: api.example.test:{port}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 400, None),
    ("two Transfer-Encoding headers", "api",
     "POST /a HTTP/1.1\r\nHost: api.example.test:{port}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
     400, None),
    ("an obfuscated Transfer-Encoding", "api",
     "POST /a HTTP/1.1\r\nHost: api.example.test:{port}\r\nTransfer-Encoding: xchunked", 400, None),
    ("consistent absolute-form target (control)", "api",
     "GET https://api.example.test:{port}/a HTTP/1.1\r\nHost: api.example.test:{port}", 200, None),
    ("consistent origin-form request (control)", "api", "GET /a HTTP/1.1\r\nHost: api.example.test:{port}", 200, None),
]


@pytest.mark.parametrize("case,sni,head,status,rule", TUNNEL_CASES, ids=[c[0] for c in TUNNEL_CASES])
def test_inside_a_tunnel_every_name_must_agree(proxy, upstream, case, sni, head, status, rule):
    before = len(upstream.requests)
    raw = head.format(port=upstream.port) + "\r\nConnection: close\r\n\r\n"
    if raw.startswith("POST"):
        raw += "0\r\n\r\n"
    reply = in_tunnel(proxy, f"api.example.test:{upstream.port}", f"{sni}.example.test", raw)
    assert _status(reply) == status, reply[:300]
    if rule is not None:
        doc = refusal(_body(reply))
        assert (doc["error"], doc["rule"]) == ("destination_denied", rule)
    assert len(upstream.requests) == before + (1 if status == 200 else 0)


def test_curl_with_a_foreign_host_header_is_refused(proxy, upstream, curl):
    before = len(upstream.requests)
    status, headers, body = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}/a",
                                     "-H", "Host: other.example.test")
    assert status == 403
    assert headers["x-clearwall-rule"] == "host-mismatch"
    assert len(upstream.requests) == before


def test_curl_connecting_to_one_host_for_another_hosts_url_is_refused(proxy, upstream, curl):
    # --connect-to makes curl CONNECT to other.example.test while SNI and Host say api.example.test.
    before = len(upstream.requests)
    status, headers, body = via_curl(
        curl, proxy, f"https://api.example.test:{upstream.port}/a",
        "--connect-to", f"api.example.test:{upstream.port}:other.example.test:{upstream.port}")
    assert status == 403, body
    assert headers["x-clearwall-rule"] == "host-mismatch"
    assert len(upstream.requests) == before


PLAIN_CASES = [
    ("absolute-form with a foreign Host header", "GET http://api.example.test:{port}/p HTTP/1.1\r\nHost: evil.example.test",
     403),
    ("absolute-form with two Host headers",
     "GET http://api.example.test:{port}/p HTTP/1.1\r\nHost: api.example.test:{port}\r\nHost: api.example.test:{port}", 403),
    ("absolute-form, consistent (control)", "GET http://api.example.test:{port}/p HTTP/1.1\r\nHost: api.example.test:{port}",
     200),
    ("origin-form is decided by its Host header", "GET /p HTTP/1.1\r\nHost: api.example.test:{port}", 200),
    ("origin-form naming an unlisted host", "GET /p HTTP/1.1\r\nHost: evil.example.test:{port}", 403),
]


@pytest.mark.parametrize("case,head,status", PLAIN_CASES, ids=[c[0] for c in PLAIN_CASES])
def test_plain_http_request_forms(proxy, plain_upstream, case, head, status):
    before = len(plain_upstream.requests)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall((head.format(port=plain_upstream.port) + "\r\nConnection: close\r\n\r\n").encode())
        reply = _read_all(s)
    assert _status(reply) == status, reply[:300]
    if status == 403:
        assert refusal(_body(reply))["error"] == "destination_denied"
    assert len(plain_upstream.requests) == before + (1 if status == 200 else 0)


@pytest.mark.parametrize("host", ["127.0.0.1", "self.example.test"])
def test_the_proxy_never_proxies_to_its_own_listen_port(proxy, host):
    # Allowed by a destination and by ssrf.allow, yet refused: a request looping back into the
    # proxy would be decided twice and logged twice, and could reach what only local users may.
    r = session(proxy).get(f"https://{host}:{proxy.port}/loop", timeout=15)
    assert r.status_code == 403
    doc = refusal(r.content)
    assert doc["rule"] == "ssrf"
    assert "this proxy itself" in doc["message"]
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(f"GET http://{host}:{proxy.port}/loop HTTP/1.1\r\nHost: {host}:{proxy.port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        reply = _read_all(s)
    assert _status(reply) == 403
    assert refusal(_body(reply))["rule"] == "ssrf"


def test_the_proxy_never_proxies_to_its_own_admin_endpoint(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(f"GET http://127.0.0.1:{proxy.admin_port}/rules HTTP/1.1\r\nHost: 127.0.0.1:{proxy.admin_port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        reply = _read_all(s)
    assert _status(reply) == 403, reply[:200]
