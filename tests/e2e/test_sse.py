"""Server-Sent Events and large streamed bodies through the real proxy, with a real httpx client."""

from __future__ import annotations

import gzip
import hashlib
import json
import ssl
import time

import httpx
import pytest

from tests.support.proxy import Proxy
from tests.support.upstream import Reply, Upstream

AWS = "AKIAPYCDYBK377OXTZQ6"
BIG = 9 * 1024 * 1024  # over the 8 MiB streaming threshold

RULES = """
version: 1
settings:
  ssrf: {{allow: [127.0.0.1/32]}}
  upstream:
    ca_bundle: {ca}
    resolve: {{api.example.test: 127.0.0.1, small.example.test: 127.0.0.1}}
destinations:
  - name: api
    hosts: [api.example.test]
    ports: [{port}]
  - name: small
    hosts: [small.example.test]
    ports: [{port}]
    limits: {{response_body: 200}}
filters:
  - name: aws-access-key
    pattern: '\\b(AKIA|ASIA)[0-9A-Z]{{16}}\\b'
    where: [sse, response.body]
    action: block
  - name: email-address
    pattern: '[\\w.+-]+@[\\w-]+\\.[\\w.]+'
    where: [sse]
    action: redact
  - name: internal-host
    pattern: 'db\\.internal\\.test'
    where: [response.body]
    action: redact
  - name: injection-phrase
    pattern: '(?i)ignore (all )?previous instructions'
    where: [sse]
    action: alert
"""

SSE = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
GZ = gzip.compress(b"data: packed one\n\ndata: mail bob@example.com\n\n")


def sse(*chunks) -> Reply:
    return Reply(200, list(chunks), SSE)


ROUTES = {
    "/slow": lambda r: sse((0, b"data: first\n\n"), (2.0, b"data: second\n\n")),
    "/secret": lambda r: sse((0, b"data: hello\n\n"), (0.3, b"data: key " + AWS.encode() + b"\n\n"),
                             (0.3, b"data: after\n\n"), (0.3, b"data: end\n\n")),
    "/split": lambda r: sse((0, b"data: begin\n\ndata: key " + AWS[:8].encode()), (0.5, AWS[8:].encode() + b"\n\n"),
                            (0.3, b"data: after\n\n")),
    "/mail": lambda r: sse((0, b"data: write to bob@example.com\n\n"), (0.1, b"data: ignore previous instructions\n\n")),
    "/many": lambda r: sse(*[(0, b"data: event %d\n\n" % i) for i in range(20)]),
    "/torn": lambda r: sse((0, b"data: hel"), (0.2, b"lo\n"), (0.2, b"\ndata: world\n\n")),
    "/ndjson": lambda r: Reply(200, [(0, b'{"token": "Hel'), (0.3, b'lo"}\n{"token": " world"}\n'),
                                     (0.3, b'{"key": "' + AWS.encode() + b'"}\n'), (0.3, b'{"token": "after"}\n')],
                               {"Content-Type": "application/x-ndjson"}),
    "/gzip": lambda r: Reply(200, [(0, GZ[:20]), (0.1, GZ[20:])], {**SSE, "Content-Encoding": "gzip"}),
    "/brotli": lambda r: Reply(200, [(0, b"\x0b\x02\x80data: x\n\n\x03")], {**SSE, "Content-Encoding": "br"}),
    "/big-redact": lambda r: Reply(200, b"d" * 5_000_000 + b" db.internal.test " + b"e" * 5_000_000,
                                   {"Content-Type": "text/plain"}),
    "/big-clean": lambda r: Reply(200, b"a" * BIG, {"Content-Type": "application/octet-stream"}),
    "/big-secret": lambda r: Reply(200, b"b" * (BIG - 100) + b" " + AWS.encode() + b" " + b"c" * 78, {"Content-Type": "text/plain"}),
}


@pytest.fixture(scope="module")
def up(pki):
    with Upstream(pki, ROUTES) as u:
        yield u


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, up):
    with Proxy(tmp_path_factory.mktemp("sse"), RULES.format(ca=pki.ca_pem, port=up.port)) as p:
        yield p


@pytest.fixture
def client(proxy):
    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca_cert)), timeout=30, trust_env=False) as c:
        yield c


def url(up, path, host="api.example.test"):
    return f"https://{host}:{up.port}{path}"


def read_stream(client, target) -> tuple[list[tuple[float, bytes]], Exception | None, httpx.Response]:
    """Every raw chunk with the time it arrived (since the request started), and how the read ended."""
    t0 = time.monotonic()
    got, error = [], None
    with client.stream("GET", target) as r:
        try:
            for chunk in r.iter_raw():
                got.append((time.monotonic() - t0, chunk))
        except httpx.HTTPError as e:
            error = e
    return got, error, r


def text(got) -> bytes:
    return b"".join(c for _, c in got)


def test_an_event_reaches_the_client_before_the_next_one_is_sent(client, up):
    got, error, r = read_stream(client, url(up, "/slow"))
    assert r.status_code == 200 and error is None
    first = next(t for t, c in got if b"first" in c)
    second = next(t for t, c in got if b"second" in c)
    assert first < 1.5, f"event 1 held back for {first:.2f}s"
    assert second >= 1.9 and text(got) == b"data: first\n\ndata: second\n\n"


def test_a_blocked_event_is_never_delivered_and_the_stream_ends_with_the_reason(client, up, proxy):
    got, _, r = read_stream(client, url(up, "/secret"))
    body = text(got)
    assert body.startswith(b"data: hello\n\n")
    assert AWS.encode() not in body and b"after" not in body and b"end" not in body
    final = body.split(b"\n\n")[1]
    assert final.startswith(b"event: clearwall-error\ndata: ")
    doc = json.loads(final.split(b"data: ", 1)[1])
    assert doc["error"] == "response_blocked" and doc["rule"] == "aws-access-key" and doc["id"]
    rec = proxy.record_for(doc["id"], timeout=30)
    assert rec["event"]["action"] == "blocked" and rec["event"]["reason"] == "response_blocked"
    assert AWS not in json.dumps(rec)


def test_a_secret_split_across_two_network_chunks_is_caught(client, up):
    got, _, _ = read_stream(client, url(up, "/split"))
    body = text(got)
    assert body.startswith(b"data: begin\n\n") and AWS[:8].encode() not in body and b"after" not in body
    assert b'"response_blocked"' in body


def test_redact_rewrites_the_event_and_alerts_are_logged(client, up, proxy):
    got, error, r = read_stream(client, url(up, "/mail"))
    assert error is None
    assert text(got) == b"data: write to [REDACTED:email-address]\n\ndata: ignore previous instructions\n\n"
    rec = proxy.record_for(r.headers.get("x-clearwall-id") or _last_id(proxy, "/mail"), timeout=30)
    assert rec["event"]["action"] == "redacted"
    assert {m["rule"] for m in rec["clearwall"]["matches"]} == {"email-address", "injection-phrase"}


def _last_id(proxy, path):
    deadline = time.monotonic() + 30  # generous: the machine is shared
    while time.monotonic() < deadline:
        for rec in reversed(proxy.records()):
            if rec.get("url", {}).get("full", "").endswith(path):
                return rec["event"]["id"]
        time.sleep(0.1)
    raise AssertionError(f"no record for {path}")


def test_the_log_keeps_the_event_text_and_hashes_the_whole_stream(client, up, proxy):
    got, _, _ = read_stream(client, url(up, "/many"))
    body = text(got)
    rec = proxy.record_for(_last_id(proxy, "/many"), timeout=30)
    logged = rec["http"]["response"]["body"]
    assert logged["content"] == body.decode() and logged["bytes"] == len(body)
    assert logged["sha256"] == hashlib.sha256(body).hexdigest() and logged["truncated"] is False


def test_the_response_cap_counts_the_whole_stream(client, up):
    got, _, _ = read_stream(client, url(up, "/many", host="small.example.test"))
    body = text(got)
    assert b"event 0" in body and b"event 19" not in body
    assert b'"response_too_large"' in body


def test_a_large_clean_body_is_streamed_whole_and_logged_with_its_hash(client, up, proxy):
    got, error, r = read_stream(client, url(up, "/big-clean"))
    assert error is None and len(text(got)) == BIG
    logged = proxy.record_for(_last_id(proxy, "/big-clean"), timeout=30)["http"]["response"]["body"]
    assert logged["bytes"] == BIG and logged["truncated"] is True
    assert logged["sha256"] == hashlib.sha256(b"a" * BIG).hexdigest()


def test_a_secret_at_the_end_of_a_large_body_cuts_the_connection(client, up, proxy):
    got, error, _ = read_stream(client, url(up, "/big-secret"))
    body = text(got)
    assert error is not None and AWS[:4].encode() + AWS[4:].encode() not in body and len(body) < BIG
    rec = proxy.record_for(_last_id(proxy, "/big-secret"), timeout=30)
    assert rec["event"]["action"] == "blocked" and "aws-access-key" in rec["rule"]["name"]


def test_a_gzip_event_stream_is_decoded_scanned_and_forwarded_decoded(client, up):
    got, error, r = read_stream(client, url(up, "/gzip"))
    assert error is None and "content-encoding" not in r.headers
    assert text(got) == b"data: packed one\n\ndata: mail [REDACTED:email-address]\n\n"


def test_an_event_stream_in_an_encoding_that_cannot_be_streamed_is_refused(client, up):
    r = client.get(url(up, "/brotli"))
    assert r.status_code == 502 and r.json()["error"] == "inspection_error"
    assert "br" in r.json()["message"]


def test_an_event_torn_across_network_chunks_arrives_whole(client, up):
    got, error, _ = read_stream(client, url(up, "/torn"))
    assert error is None and text(got) == b"data: hello\n\ndata: world\n\n"


def test_a_large_body_is_redacted_while_streaming(client, up, proxy):
    got, error, r = read_stream(client, url(up, "/big-redact"))
    body = text(got)
    assert error is None and "content-length" not in r.headers
    assert body == b"d" * 5_000_000 + b" [REDACTED:internal-host] " + b"e" * 5_000_000
    rec = proxy.record_for(_last_id(proxy, "/big-redact"), timeout=30)
    assert rec["event"]["action"] == "redacted" and rec["http"]["response"]["body"]["bytes"] == len(body)


def test_json_lines_stream_record_by_record_and_a_secret_ends_the_stream(client, up, proxy):
    got, _, r = read_stream(client, url(up, "/ndjson"))
    body = text(got)
    assert body.startswith(b'{"token": "Hello"}\n{"token": " world"}\n')
    assert AWS.encode() not in body and b"after" not in body
    final = json.loads(body.splitlines()[2])
    assert final["error"] == "response_blocked" and final["rule"] == "aws-access-key"
    rec = proxy.record_for(final["id"], timeout=30)
    assert rec["event"]["action"] == "blocked"
