"""`tls: passthrough` destinations through the real proxy: relayed undecrypted by SNI only.

The client pins the upstream's own CA (it trusts nothing else), so a handshake that Clearwall
intercepted would fail: a successful request proves no decryption happened.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from cryptography import x509

from tests.e2e.helpers import basic, raw_connect
from tests.support.proxy import Proxy

RULES = """
version: 1
settings:
  ssrf: {allow: [127.0.0.1/32]}
  upstream:
    ca_bundle: @CA@
    resolve: {pinned.example.test: 127.0.0.1, api.example.test: 127.0.0.1, vip.example.test: 127.0.0.1,
              meta.example.test: 169.254.169.254}
clients:
  - name: vip
    match: {proxy_user: vip, token_env: CW_TEST_VIP_TOKEN}
  - name: ordinary
    match: {proxy_user: ordinary, token_env: CW_TEST_ORDINARY_TOKEN}
destinations:
  - name: pinned-service
    hosts: [pinned.example.test]
    ports: [@PORT@]
    tls: passthrough
  - name: vip-only
    hosts: [vip.example.test]
    ports: [@PORT@]
    tls: passthrough
    clients: [vip]
  - name: api
    hosts: [api.example.test]
    ports: [@PORT@]
  - name: pinned-metadata
    hosts: [meta.example.test]
    ports: [@PORT@]
    tls: passthrough
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream):
    rules = RULES.replace("@CA@", str(pki.ca_pem)).replace("@PORT@", str(upstream.port))
    env = {"CW_TEST_VIP_TOKEN": "vip-pass", "CW_TEST_ORDINARY_TOKEN": "ord-pass"}
    with Proxy(tmp_path_factory.mktemp("passthrough"), rules, env=env) as p:
        yield p


def tunnel(proxy, target: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "proxy closed the connection during CONNECT"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return s


def pinned_context(pki, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.ca_pem)  # the upstream's CA only: Clearwall's CA is not trusted
    ctx.check_hostname = check_hostname
    return ctx


def get(tls: ssl.SSLSocket, host: str, path: str = "/pinned") -> bytes:
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = bytearray()
    while chunk := tls.recv(65536):
        data += chunk
    return bytes(data)


def test_passthrough_destination_is_relayed_without_decryption(proxy, upstream, pki):
    target = f"pinned.example.test:{upstream.port}"
    raw = tunnel(proxy, target)
    with pinned_context(pki).wrap_socket(raw, server_hostname="pinned.example.test") as tls:
        seen = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        reply = get(tls, target)
    assert seen == x509.load_pem_x509_certificate(pki.cert_pem.read_bytes())  # the upstream's own certificate
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b'"path": "/pinned"' in reply
    rec = _wait_tunnel_record(proxy, "pinned-service")
    assert rec["event"]["action"] == "allowed"
    assert rec["network"]["type"] == "tls-passthrough"
    assert rec["tls"]["client"]["server_name"] == "pinned.example.test"
    assert rec["client"]["bytes"] > 100 and rec["destination"]["bytes"] > len(reply)  # TLS overhead included
    assert rec["destination"]["domain"] == "pinned.example.test"
    assert rec["event"]["duration"] > 0
    assert "http" not in rec  # nothing was decrypted, so nothing of HTTP is known


def _wait_tunnel_record(proxy, rule: str, action: str | None = None, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in reversed(proxy.records()):
            if r.get("network", {}).get("type") == "tls-passthrough" and rule in r["rule"]["name"] \
                    and (action is None or r["event"]["action"] == action):
                return r
        time.sleep(0.1)
    raise AssertionError(f"no tunnel record for {rule}")


REFUSED_HELLOS = [
    ("ClientHello without SNI", None),
    ("SNI naming another allowed host", "api.example.test"),
    ("SNI naming an unlisted host", "evil.example.test"),
]


@pytest.mark.parametrize("case,sni", REFUSED_HELLOS, ids=[c[0] for c in REFUSED_HELLOS])
def test_handshake_without_matching_sni_is_closed_and_never_reaches_upstream(proxy, upstream, pki, case, sni):
    before = len(upstream.connections)
    raw = tunnel(proxy, f"pinned.example.test:{upstream.port}")
    ctx = pinned_context(pki, check_hostname=False)
    ctx.verify_mode = ssl.CERT_NONE  # whatever answers, the handshake itself must not complete
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            get(tls, "pinned.example.test")
    raw.close()
    assert len(upstream.connections) == before
    rec = _wait_tunnel_record(proxy, "pinned-service", action="blocked")
    assert rec["rule"]["name"][0] == "host-mismatch"
    assert "SNI" in rec["event"]["reason"]


def test_client_not_listed_by_the_passthrough_destination_is_refused_at_connect(proxy, upstream):
    status, _, body = raw_connect(proxy.port, f"vip.example.test:{upstream.port}",
                                  {"Proxy-Authorization": basic("ordinary", "ord-pass")})
    assert status == 403
    assert b"destination_denied" in body


def test_listed_client_reaches_its_passthrough_destination(proxy, upstream, pki):
    import base64

    target = f"vip.example.test:{upstream.port}"
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=15)
    auth = base64.b64encode(b"vip:vip-pass").decode()
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    with pinned_context(pki).wrap_socket(s, server_hostname="vip.example.test") as tls:
        assert get(tls, target, "/vip").startswith(b"HTTP/1.1 200")


def test_plain_http_inside_a_passthrough_tunnel_is_refused(proxy, upstream):
    before = len(upstream.requests)
    s = tunnel(proxy, f"pinned.example.test:{upstream.port}")
    s.sendall(f"GET /plain HTTP/1.1\r\nHost: pinned.example.test:{upstream.port}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 403"), data[:200]
    assert b"passthrough" in data
    assert len(upstream.requests) == before


def test_intercepted_destination_still_decrypts(proxy, upstream, pki):
    # The same proxy still intercepts other destinations: a client pinning the upstream CA fails.
    raw = tunnel(proxy, f"api.example.test:{upstream.port}")
    with pytest.raises(ssl.SSLCertVerificationError):
        pinned_context(pki).wrap_socket(raw, server_hostname="api.example.test")
    raw.close()


def test_passthrough_upstream_still_passes_the_ssrf_check(proxy, upstream, pki):
    raw = tunnel(proxy, f"meta.example.test:{upstream.port}")
    ctx = pinned_context(pki, check_hostname=False)
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with ctx.wrap_socket(raw, server_hostname="meta.example.test") as tls:
            get(tls, "meta.example.test")
    raw.close()
    rec = _wait_tunnel_record(proxy, "pinned-metadata", action="error")
    assert "169.254.169.254" in rec["event"]["reason"] or "link-local" in rec["event"]["reason"] \
        or "metadata" in rec["event"]["reason"], rec["event"]["reason"]
    assert rec["destination"]["bytes"] == 0
