"""Upstream TLS per destination: a private CA bundle, a client certificate (mTLS), and upstream
certificate failures answered 502 and logged with the reason."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e.helpers import session
from tests.support.certs import make_pki
from tests.support.proxy import Proxy
from tests.support.upstream import Upstream


def make_client_cert(directory: Path) -> tuple[Path, Path, Path]:
    """(client CA, client certificate, client key) for mTLS."""
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Test Client CA")).issuer_name(name("Test Client CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("clearwall-proxy")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "client-ca.pem", directory / "client.pem", directory / "client-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


@pytest.fixture(scope="module")
def env(tmp_path_factory, pki):
    work = tmp_path_factory.mktemp("upstream-tls")
    client_ca, client_cert, client_key = make_client_cert(work / "client")
    other = make_pki(work / "other-pki")  # a CA nobody trusts by default
    mtls = Upstream(None)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.cert_pem, pki.key_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED  # the upstream insists on a client certificate
    # TLS 1.2: a missing client certificate fails the handshake itself. Under TLS 1.3 the server
    # rejects it only after the client's Finished, and this test server does not always close
    # the socket then, leaving the proxy waiting for an answer (nothing is forwarded either way).
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(client_ca)
    mtls._server.socket = ctx.wrap_socket(mtls._server.socket, server_side=True)
    untrusted = Upstream(other)
    with mtls, untrusted:
        rules = f"""
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {pki.ca_pem}
    resolve: {{mtls.internal.test: 127.0.0.1, nocert.internal.test: 127.0.0.1,
              untrusted.example.test: 127.0.0.1, private-ca.example.test: 127.0.0.1,
              wrong-ca.internal.test: 127.0.0.1}}
destinations:
  - name: mtls-service
    hosts: [mtls.internal.test]
    ports: [{mtls.port}]
    upstream: {{client_cert: client/client.pem, client_key: client/client-key.pem}}
  - name: mtls-without-cert
    hosts: [nocert.internal.test]
    ports: [{mtls.port}]
  - name: untrusted
    hosts: [untrusted.example.test]
    ports: [{untrusted.port}]
  - name: private-ca
    hosts: [private-ca.example.test]
    ports: [{untrusted.port}]
    upstream: {{ca_bundle: {other.ca_pem}}}
  - name: wrong-ca
    hosts: [wrong-ca.internal.test]
    ports: [{mtls.port}]
    upstream: {{ca_bundle: {other.ca_pem}, client_cert: client/client.pem, client_key: client/client-key.pem}}
"""
        (work / "rules.yaml").write_text(rules)  # relative client_cert paths resolve next to this file
        with Proxy(work / "proxy", work / "rules.yaml") as proxy:
            yield proxy, mtls, untrusted


def test_mtls_upstream_accepts_the_proxy_with_the_destinations_client_certificate(env):
    proxy, mtls, _ = env
    before = len(mtls.requests)
    r = session(proxy).get(f"https://mtls.internal.test:{mtls.port}/secure", timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/secure"
    assert len(mtls.requests) == before + 1


def test_mtls_upstream_refuses_a_destination_without_client_certificate_and_client_gets_502(env):
    proxy, mtls, _ = env
    before = len(mtls.requests)
    r = session(proxy).get(f"https://nocert.internal.test:{mtls.port}/secure", timeout=15)
    assert r.status_code == 502
    assert len(mtls.requests) == before


@pytest.mark.parametrize("host,expect", [
    ("untrusted.example.test", 502),  # certificate from a CA neither certifi nor the bundle holds
    ("private-ca.example.test", 200),  # the destination's own ca_bundle trusts that CA
], ids=["untrusted upstream certificate", "destination ca_bundle trusts it"])
def test_upstream_certificate_trust_is_per_destination(env, host, expect):
    proxy, _, untrusted = env
    before = len(untrusted.requests)
    r = session(proxy).get(f"https://{host}:{untrusted.port}/x", timeout=15)
    assert r.status_code == expect, r.text
    assert len(untrusted.requests) == before + (1 if expect == 200 else 0)


def test_destination_ca_bundle_replaces_the_global_trust(env):
    # The mTLS upstream's certificate is signed by the globally trusted test CA, but this
    # destination trusts only its own bundle: the connection must fail.
    proxy, mtls, _ = env
    before = len(mtls.requests)
    r = session(proxy).get(f"https://wrong-ca.internal.test:{mtls.port}/x", timeout=15)
    assert r.status_code == 502
    assert len(mtls.requests) == before


def test_upstream_certificate_failure_is_logged_with_its_reason(env):
    proxy, _, untrusted = env
    session(proxy).get(f"https://untrusted.example.test:{untrusted.port}/why", timeout=15)
    import time

    deadline = time.monotonic() + 10
    while True:
        text = proxy.stderr
        lines = [l for l in text.splitlines() if "upstream TLS handshake with untrusted.example.test failed" in l]
        if lines:
            break
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.1)
    line = lines[0]
    assert "certificate" in line.lower()
    rec = proxy.record_for_url("/why")
    assert rec["event"]["action"] == "error"
