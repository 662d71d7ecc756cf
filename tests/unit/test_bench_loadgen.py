"""The proxy benchmark's load generator and upstream: parsing, accounting, and real runs against
the bench upstream on 127.0.0.1 (no proxy)."""

from __future__ import annotations

import json
import math
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from benchlib.loadgen import (  # noqa: E402
    LoadSpec, build_request, parse_hostport, parse_response_head, percentile, run_load)
from benchlib.upstream import UpstreamProcess, json_body, parse_request_head  # noqa: E402


@pytest.mark.parametrize("text, expected", [
    ("localhost:8443", ("localhost", 8443)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("[::1]:65535", ("::1", 65535)),
])
def test_host_and_port_are_split(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["localhost", ":80", "host:", "host:0", "host:65536", "host:x"])
def test_bad_host_and_port_are_refused(text):
    with pytest.raises(ValueError):
        parse_hostport(text)


@pytest.mark.parametrize("values, q, expected", [
    ([1.0], 50, 1.0),
    ([1.0, 2.0], 50, 1.0),
    ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
    ([float(i) for i in range(1, 101)], 99, 99.0),
    ([float(i) for i in range(1, 101)], 100, 100.0),
    ([float(i) for i in range(1, 1001)], 99, 990.0),
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_percentile_of_nothing_is_not_a_number():
    assert math.isnan(percentile([], 50))


@pytest.mark.parametrize("size", [0, 1, 2, 11, 12, 13, 100, 4096, 65536])
def test_json_bodies_have_the_exact_size_asked_for(size):
    body = json_body(size)
    assert len(body) == size
    if size:
        json.loads(body)


def test_a_negative_body_size_is_refused():
    with pytest.raises(ValueError):
        json_body(-1)


@pytest.mark.parametrize("head, method, length, keep_alive", [
    (b"GET / HTTP/1.1\r\nHost: a", "GET", 0, True),
    (b"POST /x HTTP/1.1\r\nContent-Length: 12\r\nHost: a", "POST", 12, True),
    (b"GET / HTTP/1.1\r\nConnection: close", "GET", 0, False),
    (b"GET / HTTP/1.0\r\nHost: a", "GET", 0, False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive", "GET", 0, True),
])
def test_upstream_parses_request_heads(head, method, length, keep_alive):
    req = parse_request_head(head)
    assert (req.method, req.content_length, req.keep_alive) == (method, length, keep_alive)


@pytest.mark.parametrize("head", [
    b"GET /\r\nHost: a",                                   # no version
    b"GET / HTTP/2\r\nHost: a",                            # not HTTP/1.x
    b"GET / HTTP/1.1\r\nno colon here",
    b"POST / HTTP/1.1\r\nContent-Length: -1",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked",      # the bench never sends it
])
def test_upstream_refuses_what_it_does_not_support(head):
    with pytest.raises(ValueError):
        parse_request_head(head)


@pytest.mark.parametrize("head, expected", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5", (200, 5, False, False)),
    (b"HTTP/1.1 200 Connection established", (200, None, False, False)),
    (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked", (403, None, True, False)),
    (b"HTTP/1.1 502 Bad Gateway\r\nConnection: close", (502, None, False, True)),
    (b"HTTP/1.0 200 OK", (200, None, False, True)),
])
def test_response_heads_are_parsed(head, expected):
    assert parse_response_head(head) == expected


@pytest.mark.parametrize("kwargs", [
    {"mode": "pipelined"}, {"clients": 0}, {"duration": 0}, {"warmup": -1}, {"timeout": 0},
    {"body_bytes": -1},
])
def test_load_options_outside_their_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        LoadSpec(("localhost", 1), "ca.pem", **kwargs)


def test_load_options_at_their_lower_bound_are_accepted():
    LoadSpec(("localhost", 1), "ca.pem", clients=1, duration=0.1, warmup=0, body_bytes=0)


def test_a_post_carries_a_json_body_of_the_asked_size():
    request = build_request(LoadSpec(("localhost", 8443), "ca.pem", body_bytes=4096), close=False)
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /bench HTTP/1.1\r\n")
    assert b"Content-Length: 4096" in head and len(body) == 4096


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    with UpstreamProcess(tmp_path_factory.mktemp("upstream"), response_bytes=4096) as up:
        yield up


def _direct(upstream, **kwargs) -> LoadSpec:
    kwargs = {"clients": 4, "duration": 1.0, "warmup": 0.1, **kwargs}
    return LoadSpec(("localhost", upstream.port), str(upstream.tls.ca_cert), **kwargs)


@pytest.mark.parametrize("mode, body_bytes, at_least", [
    ("keepalive", 0, 100),       # measured ~4,000 req/s on 2 cores
    ("keepalive", 4096, 100),
    ("newconn", 0, 10),          # a full TLS handshake per request: ~400 req/s
])
def test_load_straight_to_the_upstream_completes_without_errors(upstream, mode, body_bytes, at_least):
    result = run_load(_direct(upstream, mode=mode, body_bytes=body_bytes))
    assert result.errors == 0, result.error_samples
    assert result.requests >= at_least
    assert len(result.latencies) == result.requests
    assert 0 < result.p50_ms <= result.p99_ms < 1000
    assert result.latencies == sorted(result.latencies)


def test_non_2xx_answers_are_errors_not_throughput(upstream):
    result = run_load(_direct(upstream, path="/status/503", duration=0.5, warmup=0))
    assert result.requests == 0
    assert result.errors > 0
    assert any("HTTP 503" in message for message in result.error_samples)


@pytest.mark.parametrize("expect, errors", [(4096, False), (4095, True), (None, False)])
def test_a_2xx_with_a_body_of_the_wrong_size_is_an_error(upstream, expect, errors):
    result = run_load(_direct(upstream, clients=1, duration=0.3, warmup=0, expect_bytes=expect))
    assert bool(result.errors) is errors and bool(result.requests) is not errors
    if errors:
        assert "HTTP 200 with a 4096-byte body, expected 4095" in result.error_samples


def test_an_unreachable_target_is_counted_as_errors(upstream):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    spec = LoadSpec(("localhost", closed_port), str(upstream.tls.ca_cert), clients=2,
                    duration=0.3, warmup=0)
    result = run_load(spec)
    assert result.requests == 0 and result.errors > 0
    assert any("Connect" in m or "refused" in m for m in result.error_samples)


def test_a_proxy_that_refuses_connect_is_reported_with_its_answer(upstream):
    """A tiny stand-in proxy answers every CONNECT with 403 and a JSON body."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    body = b'{"error": "destination_denied"}'

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    threading.Thread(target=serve, daemon=True).start()
    try:
        spec = LoadSpec(("localhost", upstream.port), str(upstream.tls.ca_cert),
                        proxy=listener.getsockname(), clients=1, duration=0.3, warmup=0)
        result = run_load(spec)
    finally:
        listener.close()
    assert result.requests == 0 and result.errors > 0
    assert any("CONNECT answered 403" in m and "destination_denied" in m for m in result.error_samples)
