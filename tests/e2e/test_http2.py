"""HTTP/2 clients through the real proxy: same rules, same refusals.

mitmproxy 11.x runs with http2 off (its pinned h2 has an HTTP/2 -> HTTP/1 smuggling flaw): a
client offering h2 in ALPN gets HTTP/1.1 and everything still works. On 12.x HTTP/2 is on, and
mitmproxy picks the first protocol the client lists: curl --http2 lists h2 first and gets
HTTP/2; httpx (http2=True) lists http/1.1 first inside a proxy tunnel and keeps HTTP/1.1.
"""

from __future__ import annotations

import json
import ssl
import subprocess

import httpx
import mitmproxy.version
import pytest

from tests.support.proxy import Proxy
from tests.support.upstream import Reply, Upstream

AWS = "AKIAPYCDYBK377OXTZQ6"
H2 = int(mitmproxy.version.VERSION.split(".")[0]) >= 12  # http2 is on from mitmproxy 12

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
    assert r.http_version == "HTTP/1.1"  # httpx offers http/1.1 first in a tunnel
    assert r.status_code == status, r.text
    if kind:
        assert r.json()["error"] == kind and r.headers["x-clearwall-id"]
    else:
        assert r.json()["path"] == path


def test_http2_clients_receive_event_streams(client, up):
    with client.stream("GET", f"https://api.example.test:{up.port}/v1/events") as r:
        assert b"".join(r.iter_raw()) == b"data: one\n\ndata: two\n\n"


def curl_h2(curl, proxy, url, *args):
    out = subprocess.run([curl, "-sS", "--http2", "--max-time", "30", "-x", proxy.url, "--cacert", str(proxy.ca_cert),
                          "-w", "\n%{http_version} %{http_code}", *args, url], capture_output=True, timeout=60)
    body, _, tail = out.stdout.rpartition(b"\n")
    version, code = tail.decode().split()
    return version, int(code), body


@pytest.mark.parametrize("name, path, args, status, kind", [
    ("an allowed GET", "/v1/items", (), 200, None),
    ("a path no rule allows", "/admin", (), 403, "request_denied"),
    ("a secret in the body", "/v1/items", ("--data-binary", '{"k": "' + AWS + '"}'), 403, "content_blocked"),
])
def test_curl_http2_gets_http2_where_mitmproxy_allows_it_and_the_same_decisions(curl, proxy, up, name, path, args,
                                                                                 status, kind):
    version, code, body = curl_h2(curl, proxy, f"https://api.example.test:{up.port}{path}", *args)
    assert version == ("2" if H2 else "1.1")
    assert code == status, body
    if kind:
        assert json.loads(body)["error"] == kind


def test_curl_http2_receives_event_streams(curl, proxy, up):
    version, code, body = curl_h2(curl, proxy, f"https://api.example.test:{up.port}/v1/events")
    assert (version, code, body) == ("2" if H2 else "1.1", 200, b"data: one\n\ndata: two\n\n")
