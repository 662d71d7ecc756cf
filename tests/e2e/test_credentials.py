"""Credential injection through the real proxy: the upstream gets the secret, the client never
holds it, a client that tries to send it anywhere is refused, and it appears in no output."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

from tests.e2e.helpers import refusal, session
from tests.support.proxy import Proxy

GH_TOKEN = "ghp_InjectedSecretValue0123456789"
FILE_KEY = "filekey-FromSecretFile-55aa77bb"
SWAP_TOKEN = "swp_PlaceholderSecret987654321"
SECRETS = (GH_TOKEN, FILE_KEY, SWAP_TOKEN)

RULES = """
version: 1
settings:
  ssrf: {allow: [127.0.0.1/32]}
  upstream:
    ca_bundle: @CA@
    resolve:
      api.example.test: 127.0.0.1
      swap.example.test: 127.0.0.1
      empty.example.test: 127.0.0.1
      other.example.test: 127.0.0.1
      report.example.test: 127.0.0.1
destinations:
  - name: github-api
    hosts: [api.example.test]
    ports: [@PORT@]
    inject_headers: {Authorization: "Bearer ${CW_TEST_GH_TOKEN}", X-Service-Key: "${file:@SECRET_FILE@}"}
    strip_headers: [authorization, cookie]
    require: true
  - name: swap-api
    hosts: [swap.example.test]
    ports: [@PORT@]
    placeholders: {"clearwall:swap": "${CW_TEST_SWAP_TOKEN}"}
  - name: empty-cred
    hosts: [empty.example.test]
    ports: [@PORT@]
    inject_headers: {Authorization: "Bearer ${CW_TEST_EMPTY}"}
    require: true
  - name: other
    hosts: [other.example.test]
    ports: [@PORT@]
  - name: plain-cred
    hosts: [api.example.test]
    ports: [@PLAIN_PORT@]
    inject_headers: {Authorization: "Bearer ${CW_TEST_GH_TOKEN}"}
"""


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, upstream, plain_upstream):
    work = tmp_path_factory.mktemp("credentials")
    secret_file = work / "api-key.txt"
    secret_file.write_text(FILE_KEY + "\n")
    rules = (RULES.replace("@CA@", str(pki.ca_pem)).replace("@PORT@", str(upstream.port))
             .replace("@PLAIN_PORT@", str(plain_upstream.port)).replace("@SECRET_FILE@", str(secret_file)))
    env = {"CW_TEST_GH_TOKEN": GH_TOKEN, "CW_TEST_SWAP_TOKEN": SWAP_TOKEN, "CW_TEST_EMPTY": ""}
    with Proxy(work / "proxy", rules, env=env) as p:
        p.env_for_cli = env
        yield p


def _last(upstream, before):
    assert len(upstream.requests) == before + 1, "the upstream did not receive exactly one request"
    return upstream.requests[-1]


def test_upstream_receives_the_injected_credentials_and_not_the_clients(proxy, upstream):
    before = len(upstream.requests)
    r = session(proxy).get(f"https://api.example.test:{upstream.port}/user",
                           headers={"Authorization": "Bearer client-own-token", "Cookie": "sid=client-cookie"},
                           timeout=15)
    assert r.status_code == 200, r.text
    got = _last(upstream, before)
    assert got.headers["authorization"] == f"Bearer {GH_TOKEN}"
    assert got.headers["x-service-key"] == FILE_KEY  # a header no redact list names: scrubbed as a secret
    assert "cookie" not in got.headers
    assert not upstream.received("client-own-token")
    rec = proxy.record_for(r.headers.get("X-Clearwall-Id") or _flow_id(proxy, "/user"))
    assert GH_TOKEN not in json.dumps(rec)


def test_a_response_echoing_the_injected_credential_reaches_the_client_scrubbed(proxy, upstream):
    from tests.support.upstream import Reply

    def echo_auth(req):
        auth = req.headers.get("authorization", "")
        return Reply(200, json.dumps({"you_sent": auth}).encode(), {"Content-Type": "application/json", "X-Seen": auth})

    upstream.routes["/echo-auth"] = echo_auth
    r = session(proxy).get(f"https://api.example.test:{upstream.port}/echo-auth", timeout=15)
    assert r.status_code == 200
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {GH_TOKEN}"  # it was injected
    assert GH_TOKEN not in r.text and GH_TOKEN not in r.headers["X-Seen"]
    assert "[REDACTED]" in r.json()["you_sent"]


def _flow_id(proxy, path_suffix):
    for rec in reversed(proxy.wait_records(1)):
        if rec.get("url", {}).get("full", "").endswith(path_suffix):
            return rec["event"]["id"]
    raise AssertionError(f"no record for {path_suffix}")


@pytest.mark.parametrize("where", ["header", "query"])
def test_an_agreed_placeholder_is_swapped_for_the_secret(proxy, upstream, where):
    before = len(upstream.requests)
    s = session(proxy)
    if where == "header":
        r = s.get(f"https://swap.example.test:{upstream.port}/items", headers={"Authorization": "Bearer clearwall:swap"},
                  timeout=15)
    else:
        r = s.get(f"https://swap.example.test:{upstream.port}/items?api_key=clearwall:swap", timeout=15)
    assert r.status_code == 200, r.text
    got = _last(upstream, before)
    if where == "header":
        assert got.headers["authorization"] == f"Bearer {SWAP_TOKEN}"
    else:
        assert got.path == f"/items?api_key={SWAP_TOKEN}"
    assert "clearwall:swap" not in repr(got)


def test_a_placeholder_is_not_swapped_at_a_destination_that_does_not_define_it(proxy, upstream):
    before = len(upstream.requests)
    r = session(proxy).get(f"https://other.example.test:{upstream.port}/x",
                           headers={"Authorization": "Bearer clearwall:swap"}, timeout=15)
    assert r.status_code == 200
    got = _last(upstream, before)
    assert got.headers["authorization"] == "Bearer clearwall:swap"
    assert SWAP_TOKEN not in repr(got)


def test_required_credential_that_is_empty_refuses_the_request(proxy, upstream):
    before = len(upstream.requests)
    r = session(proxy).get(f"https://empty.example.test:{upstream.port}/x", timeout=15)
    assert r.status_code == 403
    doc = refusal(r.content)
    assert doc["error"] == "request_denied"
    assert doc["rule"] == "empty-cred"
    assert "require" in doc["message"]
    assert len(upstream.requests) == before


def test_credentials_are_never_sent_over_plain_http(proxy, plain_upstream):
    before = len(plain_upstream.requests)
    r = session(proxy).get(f"http://api.example.test:{plain_upstream.port}/x", timeout=15)
    assert r.status_code == 403
    assert refusal(r.content)["rule"] == "plain-cred"
    assert len(plain_upstream.requests) == before


def _b64(s: str, prefix: str = "") -> str:
    return base64.b64encode((prefix + s).encode()).decode()


EXFILTRATION = [
    ("plain in a header to another destination", "other", {"headers": {"X-Note": GH_TOKEN}}),
    ("plain in the URL query", "other", {"params": {"q": GH_TOKEN}}),
    ("plain in a JSON body", "other", {"json": {"token": GH_TOKEN}}),
    ("base64 in the body", "other", {"data": _b64(GH_TOKEN)}),
    ("base64 at an odd offset in the body", "other", {"data": _b64(FILE_KEY, prefix="xy:")}),
    ("percent-encoded every byte in the body", "other",
     {"data": "t=" + "".join(f"%{b:02x}" for b in SWAP_TOKEN.encode())}),
    ("hex in a header", "other", {"headers": {"X-Trace": GH_TOKEN.encode().hex()}}),
    ("to the very destination that injects it", "api", {"headers": {"X-Copy": GH_TOKEN}}),
    ("the file secret in the URL path", "other", {"path": "/upload/" + FILE_KEY}),
]


@pytest.mark.parametrize("case,host,kw", EXFILTRATION, ids=[c[0] for c in EXFILTRATION])
def test_a_client_sending_an_injected_secret_anywhere_is_refused(proxy, upstream, case, host, kw):
    before = len(upstream.requests)
    kw = dict(kw)
    path = kw.pop("path", "/post")
    r = session(proxy).post(f"https://{host}.example.test:{upstream.port}{path}", timeout=15, **kw)
    assert r.status_code == 403, r.text
    doc = refusal(r.content)
    assert doc["error"] == "content_blocked"
    assert doc["rule"] == "credential-exfiltration"
    assert not any(s in r.text for s in SECRETS)
    assert len(upstream.requests) == before
    rec = proxy.record_for(doc["id"])
    assert rec["event"]["action"] == "blocked"
    text = json.dumps(rec)
    assert not any(s in text for s in SECRETS), text


def test_gzip_compressed_body_carrying_a_secret_is_refused(proxy, upstream):
    import gzip

    before = len(upstream.requests)
    r = session(proxy).post(f"https://other.example.test:{upstream.port}/post",
                            data=gzip.compress(json.dumps({"k": SWAP_TOKEN}).encode()),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}, timeout=15)
    assert r.status_code == 403
    assert refusal(r.content)["rule"] == "credential-exfiltration"
    assert len(upstream.requests) == before


def test_an_ordinary_request_elsewhere_is_not_mistaken_for_exfiltration(proxy, upstream):
    before = len(upstream.requests)
    r = session(proxy).post(f"https://other.example.test:{upstream.port}/post", json={"text": "ghp_ but not the token"},
                            timeout=15)
    assert r.status_code == 200
    assert len(upstream.requests) == before + 1


def test_no_injected_secret_in_log_dir_stderr_admin_or_explain(proxy, upstream):
    # Traffic that carries the secrets through every path first: injected, swapped, echoed back.
    s = session(proxy)
    assert s.get(f"https://api.example.test:{upstream.port}/user", timeout=15).status_code == 200
    assert s.get(f"https://swap.example.test:{upstream.port}/e?k=clearwall:swap", timeout=15).status_code == 200
    assert s.post(f"https://other.example.test:{upstream.port}/p", data=GH_TOKEN, timeout=15).status_code == 403
    proxy.wait_records(3)
    forms = [f for sec in SECRETS for f in (sec, _b64(sec), urllib.parse.quote(sec))]
    dumps = {p.name: p.read_bytes() for p in proxy.log_dir.rglob("*") if p.is_file()}
    assert dumps, "the proxy wrote no log"
    admin = b""
    for path in ("/metrics", "/rules", "/healthz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}{path}", timeout=5) as resp:
            admin += resp.read()
    assert b"clearwall_requests_total" in admin  # the endpoint answered: its output was really checked
    explain = subprocess.run(
        [sys.executable, "-m", "clearwall", "rules", "explain", str(proxy.rules_path),
         "--url", f"https://api.example.test:{upstream.port}/user"],
        capture_output=True, env={**proxy.env, **proxy.env_for_cli}, timeout=60)
    outputs = {**dumps, "stderr": proxy.stderr.encode(), "admin": admin,
               "explain": explain.stdout + explain.stderr}
    for name, data in outputs.items():
        for f in forms:
            assert f.encode() not in data, f"{name} contains an injected secret"
    assert explain.returncode == 0 and b"github-api" in explain.stdout  # it ran and named the rule


def test_a_rotated_secret_file_is_injected_after_sighup(make_proxy, pki, upstream):
    import signal
    import time

    from tests.support.proxy import Proxy  # noqa: F401  (make_proxy starts one)

    p = make_proxy("version: 1\n")
    p.stop()
    secret = p.workdir / "rotating.txt"
    secret.write_text("first-rotating-secret-111\n")
    p.rules_path.write_text(f"""
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream: {{ca_bundle: {pki.ca_pem}, resolve: {{api.example.test: 127.0.0.1}}}}
destinations:
  - name: rotating
    hosts: [api.example.test]
    ports: [{upstream.port}]
    inject_headers: {{X-Service-Key: "${{file:{secret}}}"}}
""")
    p.start()
    s = session(p)
    assert s.get(f"https://api.example.test:{upstream.port}/r1", timeout=15).status_code == 200
    assert upstream.requests[-1].headers["x-service-key"] == "first-rotating-secret-111"
    secret.write_text("second-rotating-secret-222\n")
    p.proc.send_signal(signal.SIGHUP)
    deadline, sent = time.monotonic() + 20, 1
    while True:
        # A new connection each time: a tunnel keeps the rules it was opened with.
        session(p).get(f"https://api.example.test:{upstream.port}/r2", timeout=15)
        sent += 1
        if upstream.requests[-1].headers["x-service-key"] == "second-rotating-secret-222":
            break
        assert time.monotonic() < deadline, "the rotated secret was not injected after SIGHUP"
        time.sleep(0.3)
    records = p.wait_records(sent, timeout=10)
    assert len(records) >= sent
    text = (p.log_dir / "flows.jsonl").read_text()
    assert "second-rotating-secret-222" not in text and "first-rotating-secret-111" not in text
