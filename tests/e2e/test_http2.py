"""HTTP/2 clients (httpx http2=True) through the real proxy: same rules, same refusals.

mitmproxy 11.x runs with http2 off (its pinned h2 has an HTTP/2 -> HTTP/1 smuggling flaw): the
client offers h2 in ALPN, gets HTTP/1.1, and everything still works. On 12.x HTTP/2 is negotiated.
"""

from __future__ import annotations

import ssl

import httpx
import mitmproxy.version
import pytest

from tests.support.proxy import Proxy
from tests.support.upstream import Reply, Upstream

AWS = "AKIAPYCDYBK377OXTZQ6"
EXPECTED = "HTTP/2" if int(mitmproxy.version.VERSION.split(".")[0]) >= 12 else "HTTP/1.1"

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
    methods: [GET, POST]
    paths: ["/v1/**"]
filters:
  - name: aws-access-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{{16}}\\b'
    where: [request.body, response.body, sse]
    action: block
"""

ROUTES = {"/v1/events": lambda r: Reply(200, [(0, b"data: one\n\n"), (0.2, b"data: two\n\n")],
                                        {"Content-Type": "text/event-stream"})}


@pytest.fixture(scope="module")
def up(pki):
    with Upstream(pki, ROUTES) as u:
        yield u


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, up):
    with Proxy(tmp_path_factory.mktemp("h2"), RULES.format(ca=pki.ca_pem, port=up.port)) as p:
        yield p


@pytest.fixture
def client(proxy):
    ctx = ssl.create_default_context(cafile=str(proxy.ca_cert))
    with httpx.Client(http2=True, proxy=proxy.url, verify=ctx, timeout=30, trust_env=False) as c:
        yield c


@pytest.mark.parametrize("name, method, path, body, status, kind", [
    ("an allowed GET", "GET", "/v1/items", None, 200, None),
    ("an allowed POST", "POST", "/v1/items", b'{"a": 1}', 200, None),
    ("a path no rule allows", "GET", "/admin", None, 403, "request_denied"),
    ("a method no rule allows", "DELETE", "/v1/items", None, 403, "request_denied"),
    ("a secret in the body", "POST", "/v1/items", b'{"k": "' + AWS.encode() + b'"}', 403, "content_blocked"),
])
def test_http2_clients_get_the_same_decisions(client, up, name, method, path, body, status, kind):
    r = client.request(method, f"https://api.example.test:{up.port}{path}", content=body)
    assert r.http_version == EXPECTED
    assert r.status_code == status, r.text
    if kind:
        assert r.json()["error"] == kind and r.headers["x-clearwall-id"]
    else:
        assert r.json()["path"] == path


def test_http2_clients_receive_event_streams(client, up):
    with client.stream("GET", f"https://api.example.test:{up.port}/v1/events") as r:
        assert r.http_version == EXPECTED
        assert b"".join(r.iter_raw()) == b"data: one\n\ndata: two\n\n"
