"""The Credentials addon on mitmproxy test flows: order of strip / swap / inject, refusals, modes."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import tflow

from clearwall.mitm.credentials import Credentials
from clearwall.mitm.runtime import Runtime
from clearwall.mitm.state import flow_state
from clearwall.policy.decision import Decision
from clearwall.policy.loader import load_rules

RULES = """
version: 1
settings: {mode: @MODE@}
destinations:
  - name: gh
    hosts: [address]
    ports: [22]
    inject_headers: {Authorization: "Bearer ${GH}"}
    strip_headers: [cookie]
    placeholders: {"clearwall:gh2": "${GH2}"}
  - name: empty
    hosts: [empty.example.test]
    inject_headers: {Authorization: "Bearer ${EMPTY}"}
    require: true
"""
ENV = {"GH": "gh-token-abcdef", "GH2": "second-secret-xyz", "EMPTY": ""}


def _rules(tmp_path, mode="enforce"):
    (tmp_path / "r.yaml").write_text(RULES.replace("@MODE@", mode))
    return load_rules(tmp_path / "r.yaml", environ=ENV)


def _flow(rules, destination, scheme="https", **headers):
    f = tflow.tflow()
    f.request.scheme = scheme
    for k, v in headers.items():
        f.request.headers[k.replace("_", "-")] = v
    st = flow_state(f)
    st.rules, st.decision = rules, Decision(None, destination=destination)
    return f


def test_client_header_is_replaced_cookie_stripped_placeholder_swapped(tmp_path):
    rules = _rules(tmp_path)
    f = _flow(rules, "gh", Authorization="Bearer mine", Cookie="a=b", X_Other="clearwall:gh2")
    addon = Credentials(Runtime(rules=rules))
    asyncio.run(addon.requestheaders(f))
    # Nothing is injected before the content filters have scanned the request (`request` hook).
    assert f.request.headers.get_all("authorization") == ["Bearer mine"]
    asyncio.run(addon.request(f))
    assert f.response is None
    assert f.request.headers.get_all("authorization") == ["Bearer gh-token-abcdef"]
    assert "cookie" not in f.request.headers
    assert f.request.headers["x-other"] == "second-secret-xyz"
    assert {"gh-token-abcdef", "second-secret-xyz"} <= flow_state(f).secrets


@pytest.mark.parametrize("mode,refused", [("enforce", True), ("report", False)])
def test_exfiltration_refuses_in_enforce_and_is_only_reported_in_report_mode(tmp_path, mode, refused):
    rules = _rules(tmp_path, mode)
    f = _flow(rules, None, X_Leak="gh-token-abcdef")
    asyncio.run(Credentials(Runtime(rules=rules)).requestheaders(f))
    assert (f.response is not None) is refused
    st = flow_state(f)
    kinds = [st.refusal.kind] if st.refusal else [r.kind for r in st.would_block]
    assert kinds == ["content_blocked"]
    assert "gh-token-abcdef" in st.secrets  # so the body log scrubs it
    if refused:
        assert b"gh-token-abcdef" not in f.response.content


def test_body_exfiltration_is_found_at_request(tmp_path):
    rules = _rules(tmp_path)
    f = _flow(rules, None)
    f.request.content = b'{"x": "second-secret-xyz"}'
    asyncio.run(Credentials(Runtime(rules=rules)).request(f))
    assert f.response is not None and f.response.status_code == 403


def test_undecodable_compressed_body_is_refused_not_passed(tmp_path):
    rules = _rules(tmp_path)
    f = _flow(rules, None, Content_Encoding="gzip")
    f.request.raw_content = b"not gzip at all"
    asyncio.run(Credentials(Runtime(rules=rules)).request(f))
    assert f.response is not None and f.response.status_code == 502


def test_required_empty_credential_refuses(tmp_path):
    rules = _rules(tmp_path)
    f = _flow(rules, "empty")
    asyncio.run(Credentials(Runtime(rules=rules)).requestheaders(f))
    assert flow_state(f).refusal.kind == "request_denied"
    assert "authorization" not in f.request.headers


def test_no_credentials_over_plain_http(tmp_path):
    rules = _rules(tmp_path)
    f = _flow(rules, "gh", scheme="http")
    asyncio.run(Credentials(Runtime(rules=rules)).requestheaders(f))
    assert flow_state(f).refusal.kind == "request_denied"
    assert "gh-token" not in f.request.headers.get("authorization", "")


@pytest.mark.parametrize("versions,size", [(2, 2), (3, 2)])
def test_compiled_rule_sets_are_cached_up_to_the_limit(tmp_path, versions, size):
    addon = Credentials(Runtime(), cache_size=2)
    for i in range(versions):
        (tmp_path / "r.yaml").write_text(RULES.replace("@MODE@", "enforce") + f"# {i}\n"
                                         + f"deny: [{{name: d{i}, hosts: [x{i}.example.test]}}]\n")
        asyncio.run(addon._compiled(load_rules(tmp_path / "r.yaml", environ=ENV)))
    assert len(addon._cache) == size


ECHO = [
    ("in a response header", {"X-Echo": "Bearer gh-token-abcdef"}, b"ok", None),
    ("in a plain response body", {}, b'{"auth": "Bearer gh-token-abcdef"}', None),
    ("in a gzip response body", {"Content-Encoding": "gzip"}, b'{"auth": "gh-token-abcdef"}', "gzip"),
]


@pytest.mark.parametrize("case,headers,body,encoding", ECHO, ids=[e[0] for e in ECHO])
def test_a_response_echoing_the_injected_secret_is_scrubbed_before_the_client_sees_it(tmp_path, case, headers,
                                                                                       body, encoding):
    import gzip

    from mitmproxy import http

    rules = _rules(tmp_path)
    f = _flow(rules, "gh")
    raw = gzip.compress(body) if encoding == "gzip" else body
    f.response = http.Response.make(200, b"", headers)
    f.response.raw_content = raw
    addon = Credentials(Runtime(rules=rules))
    asyncio.run(addon.responseheaders(f))  # the hooks in mitmproxy's order
    asyncio.run(addon.response(f))
    text = repr(list(f.response.headers.items(multi=True))).encode() + f.response.content
    assert b"gh-token-abcdef" not in text
    assert b"[REDACTED]" in text
    assert f.response.headers.get("content-encoding") == encoding
    assert flow_state(f).redacted


def test_a_response_without_the_secret_is_left_alone(tmp_path):
    from mitmproxy import http

    rules = _rules(tmp_path)
    f = _flow(rules, "gh")
    f.response = http.Response.make(200, b"nothing secret", {"X-A": "b"})
    asyncio.run(Credentials(Runtime(rules=rules)).response(f))
    assert f.response.content == b"nothing secret"
    assert not flow_state(f).redacted


def test_an_echoed_header_is_scrubbed_before_a_streamed_response_sends_it(tmp_path):
    from mitmproxy import http

    rules = _rules(tmp_path)
    f = _flow(rules, "gh")
    f.response = http.Response.make(200, b"", {"X-Echo": "token gh-token-abcdef"})
    asyncio.run(Credentials(Runtime(rules=rules)).responseheaders(f))  # headers leave after this hook
    assert f.response.headers["X-Echo"] == "token [REDACTED]" and flow_state(f).redacted
