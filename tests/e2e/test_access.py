"""The destination allowlist through the real proxy, with real curl and requests clients."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.helpers import basic, raw_connect, refusal, session, via_curl
from tests.support.proxy import Proxy

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve:
      api.example.test: 127.0.0.1
      raw.example.test: 127.0.0.1
      other.example.test: 127.0.0.1
      meta.example.test: 169.254.169.254
      mapped.example.test: "::ffff:10.0.0.1"
      paste.example.test: 127.0.0.1
clients:
  - name: github-mcp
    match: {{proxy_user: github-mcp, token_env: TEST_GH_TOKEN}}
destinations:
  - name: github-api
    hosts: [api.example.test]
    ports: [{port}]
    methods: [GET, POST]
    paths: ["/repos/**", "/user", "/search/*"]
  - name: raw-files
    hosts: ["*.raw.example.test", raw.example.test]
    ports: [{port}]
    clients: [github-mcp]
  - name: metadata-trap
    hosts: [meta.example.test, mapped.example.test]
    ports: [{port}]
  - name: plain-http
    hosts: [api.example.test]
    ports: [{plain_port}]
    methods: [GET]
deny:
  - name: paste-sites
    hosts: [paste.example.test]
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream, plain_upstream):
    rules = RULES.format(ca=pki.ca_pem, port=upstream.port, plain_port=plain_upstream.port)
    p = Proxy(tmp_path_factory.mktemp("access"), rules, env={"TEST_GH_TOKEN": "s3cret-token"})
    with p:
        yield p


def test_allowed_request_reaches_upstream_with_body_intact_and_is_logged(proxy, upstream, curl):
    before = len(upstream.requests)
    status, headers, body = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}/repos/acme/app",
                                 "-X", "POST", "-H", "Content-Type: application/json", "--data", '{"title": "hello"}')
    assert status == 200, body
    assert b'"ok": true' in body
    assert upstream.requests[before].body == b'{"title": "hello"}'
    assert upstream.requests[before].path == "/repos/acme/app"
    rec = proxy.record_for_url("/repos/acme/app")
    assert rec["event"]["action"] == "allowed"
    assert rec["rule"]["name"] == ["github-api"]
    assert rec["http"]["request"]["body"]["content"] == '{"title": "hello"}'
    assert rec["http"]["response"]["status_code"] == 200
    assert rec["destination"]["domain"] == "api.example.test"


def test_requests_client_gets_the_upstream_response(proxy, upstream):
    r = session(proxy).get(f"https://api.example.test:{upstream.port}/user", timeout=10)
    assert r.status_code == 200
    assert r.json()["path"] == "/user"


def test_connect_to_unlisted_host_is_refused_before_tls_with_json_body(proxy, upstream):
    before = len(upstream.requests)
    status, headers, body = raw_connect(proxy.port, f"other.example.test:{upstream.port}")
    assert status == 403
    doc = refusal(body)
    assert doc["error"] == "destination_denied" and doc["rule"] == "default"
    assert headers["x-clearwall-rule"] == "default"
    assert headers["x-clearwall-id"] == doc["id"]
    assert len(upstream.requests) == before
    rec = proxy.record_for(doc["id"])
    assert rec["http"]["request"]["method"] == "CONNECT"
    assert rec["event"]["action"] == "blocked" and rec["event"]["reason"] == "destination_denied"


def test_requests_client_sees_refused_connect_as_proxy_error(proxy, upstream):
    with pytest.raises(requests.exceptions.ProxyError, match="403"):
        session(proxy).get(f"https://other.example.test:{upstream.port}/", timeout=10)


def test_deny_list_names_the_deny_entry(proxy, upstream):
    status, headers, body = raw_connect(proxy.port, f"paste.example.test:{upstream.port}")
    assert status == 403
    assert refusal(body)["rule"] == "paste-sites"


def test_wrong_port_is_default_denied(proxy, upstream):
    status, _, body = raw_connect(proxy.port, "api.example.test:443")
    assert status == 403 and refusal(body)["rule"] == "default"


@pytest.mark.parametrize("method, path, why", [
    ("DELETE", "/repos/acme/app", "method DELETE"),
    ("GET", "/admin", "path /admin"),
    ("GET", "/search/code/extra", "path /search/code/extra"),
    ("GET", "/repos/%2e%2e/admin", "path /admin"),
    ("GET", "/repos/..%2fadmin", "encoded slash"),
    ("GET", "/repos/../../etc/passwd", "climbs above the root"),
])
def test_method_and_path_refusals_never_reach_upstream(proxy, upstream, curl, method, path, why):
    before = len(upstream.requests)
    status, headers, body = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}{path}",
                                 "-X", method, "--path-as-is")
    assert status == 403, body
    doc = refusal(body)
    assert doc["error"] == "request_denied" and doc["rule"] == "github-api"
    assert why in doc["message"]
    assert headers["x-clearwall-rule"] == "github-api"
    assert len(upstream.requests) == before


def test_client_scoped_destination_needs_credentials_then_allows(proxy, upstream, curl):
    url = f"https://raw.example.test:{upstream.port}/file.txt"
    status, headers, body = raw_connect(proxy.port, f"raw.example.test:{upstream.port}")
    # Unidentified, and the destination admits only proxy-authenticated clients: a challenge.
    assert status == 407 and refusal(body)["error"] == "auth_required"
    assert headers["proxy-authenticate"].startswith("Basic")
    status, headers, body = raw_connect(proxy.port, f"raw.example.test:{upstream.port}",
                                        {"Proxy-Authorization": basic("github-mcp", "wrong")})
    assert status == 407
    assert headers["proxy-authenticate"].startswith("Basic")
    assert refusal(body)["error"] == "auth_required"
    status, _, body = via_curl(curl, proxy, url, "--proxy-user", "github-mcp:s3cret-token")
    assert status == 200, body
    r = session(proxy, "github-mcp", "s3cret-token").get(url, timeout=10)
    assert r.status_code == 200
    assert "proxy-authorization" not in upstream.requests[-1].headers
    rec = proxy.record_for_url("/file.txt")
    assert rec["labels"]["client"] == "github-mcp"
    assert "s3cret-token" not in (proxy.log_dir / "flows.jsonl").read_text()


@pytest.mark.parametrize("host, category", [
    ("meta.example.test", "metadata"),
    ("mapped.example.test", "private (embedded in IPv6)"),
])
def test_names_resolving_to_internal_addresses_are_refused_without_connecting(proxy, upstream, curl, host, category):
    status, headers, body = via_curl(curl, proxy, f"https://{host}:{upstream.port}/latest/meta-data/")
    assert status == 403, body
    doc = refusal(body)
    assert doc["error"] == "destination_denied" and doc["rule"] == "ssrf"
    assert category in doc["message"]


def test_ip_literal_connect_to_private_range_is_refused(proxy):
    status, _, body = raw_connect(proxy.port, "10.0.0.1:443")
    assert status == 403 and refusal(body)["error"] == "destination_denied"


def test_host_header_must_match_the_connect_target(proxy, upstream, curl):
    before = len(upstream.requests)
    status, _, body = via_curl(curl, proxy, f"https://api.example.test:{upstream.port}/user", "-H", "Host: evil.example")
    assert status == 403
    assert refusal(body)["rule"] == "host-mismatch"
    assert len(upstream.requests) == before


def test_plain_http_absolute_form_goes_through_the_same_rules(proxy, plain_upstream, curl):
    ok, _, body = via_curl(curl, proxy, f"http://api.example.test:{plain_upstream.port}/anything")
    assert ok == 200, body
    assert plain_upstream.requests[-1].path == "/anything"
    before = len(plain_upstream.requests)
    status, _, body = via_curl(curl, proxy, f"http://api.example.test:{plain_upstream.port}/x", "-X", "POST", "--data", "a=1")
    assert status == 403 and refusal(body)["error"] == "request_denied"
    status, _, body = via_curl(curl, proxy, f"http://other.example.test:{plain_upstream.port}/x")
    assert status == 403 and refusal(body)["rule"] == "default"
    assert len(plain_upstream.requests) == before


def test_compressed_and_binary_bodies_are_logged_decoded_or_base64(proxy, upstream):
    import gzip

    from tests.support.upstream import Reply

    doc = b'{"items": ["' + b"x" * 5000 + b'"]}'
    upstream.routes["/repos/gz"] = lambda req: Reply(200, gzip.compress(doc), {
        "Content-Type": "application/json", "Content-Encoding": "gzip"})
    upstream.routes["/repos/bin"] = lambda req: Reply(200, bytes(range(256)), {"Content-Type": "application/octet-stream"})
    s = session(proxy)
    r = s.get(f"https://api.example.test:{upstream.port}/repos/gz", timeout=10)
    assert r.status_code == 200 and r.content == doc  # the client still gets the encoded body, decoded by requests
    assert s.get(f"https://api.example.test:{upstream.port}/repos/bin", timeout=10).content == bytes(range(256))
    import time
    deadline = time.monotonic() + 5
    by_path = {}
    while time.monotonic() < deadline and len(by_path) < 2:
        by_path = {r["url"]["full"].rsplit("/", 1)[1]: r for r in proxy.records() if r.get("url", {}).get("full", "").startswith(f"https://api.example.test:{upstream.port}/repos/") and r["url"]["full"].rsplit("/", 1)[1] in ("gz", "bin")}
        time.sleep(0.05)
    gz = by_path["gz"]["http"]["response"]["body"]
    assert gz["content"] == doc.decode() and gz["encoding"] == "utf-8" and gz["bytes"] == len(doc)
    binary = by_path["bin"]["http"]["response"]["body"]
    assert binary["encoding"] == "base64" and binary["bytes"] == 256
