"""Record shaping: body objects, header redaction, and the ECS record, field by field."""

from __future__ import annotations

import base64
import gzip
import hashlib

import orjson
import pytest

from clearwall.audit.fields import body_field, iso_timestamp, redact_headers, utf8_prefix
from clearwall.audit.record import Exchange, Message, build_record, connect_record, tunnel_record

T0 = 1_790_000_000.25  # 2026-09-21T14:13:20.250Z


@pytest.mark.parametrize(
    "name, data, content_type, max_bytes, content, encoding, truncated",
    [
        ("short text is kept whole", b"hello", "text/plain", 10, "hello", "utf-8", False),
        ("text exactly at the cap is not truncated", b"0123456789", None, 10, "0123456789", "utf-8", False),
        ("text one byte over the cap is cut", b"0123456789X", None, 10, "0123456789", "utf-8", True),
        ("a cut never splits a multi-byte character", "aé€".encode(), None, 4, "aé", "utf-8", True),
        ("a cut right after a 3-byte character keeps it", "aé€b".encode(), None, 6, "aé€", "utf-8", True),
        ("json without charset is text", b'{"k":"v"}', "application/json", 100, '{"k":"v"}', "utf-8", False),
        ("invalid utf-8 is base64", b"\xff\xfe\x00a", None, 100, base64.b64encode(b"\xff\xfe\x00a").decode(), "base64", False),
        ("a binary content type is base64 even when it decodes", b"abc", "application/octet-stream", 100, "YWJj", "base64", False),
        ("an image type is base64", b"abc", "image/png", 100, "YWJj", "base64", False),
        ("cut binary keeps max_bytes raw bytes", b"\xff" * 10, None, 4, base64.b64encode(b"\xff" * 4).decode(), "base64", True),
        ("an empty body", b"", None, 10, "", "utf-8", False),
        ("no cap keeps everything", b"x" * 5000, None, None, "x" * 5000, "utf-8", False),
        ("a zero cap keeps nothing", b"abc", None, 0, "", "utf-8", True),
    ],
)
def test_body_field(name, data, content_type, max_bytes, content, encoding, truncated):
    body = body_field(data, content_type=content_type, max_bytes=max_bytes)
    assert body == {
        "bytes": len(data),
        "content": content,
        "encoding": encoding,
        "truncated": truncated,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_compressed_looking_body_is_base64_and_round_trips():
    raw = gzip.compress(b"secret payload" * 100)
    body = body_field(raw, content_type="application/json", max_bytes=1 << 20)
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["content"]) == raw


def test_truncated_body_hash_describes_the_whole_body():
    data = b"A" * 2_000_000
    body = body_field(data, content_type=None, max_bytes=1024)
    assert body["bytes"] == 2_000_000
    assert len(body["content"]) == 1024
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["truncated"] is True


def test_negative_cap_is_refused():
    with pytest.raises(ValueError, match="max_bytes"):
        body_field(b"x", content_type=None, max_bytes=-1)


def test_secrets_in_a_body_are_replaced_but_the_hash_is_of_what_was_sent():
    data = b'{"echo":"Bearer tok-123"}'
    body = body_field(data, content_type=None, max_bytes=100, secrets=("tok-123",))
    assert "tok-123" not in body["content"]
    assert "[REDACTED]" in body["content"]
    assert body["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("cut", range(0, 12))
def test_utf8_prefix_always_decodes(cut):
    data = "a€b😀c".encode()
    prefix = utf8_prefix(data, cut)
    assert len(prefix) <= cut
    prefix.decode("utf-8")
    assert len(prefix) >= cut - 3


@pytest.mark.parametrize(
    "name, headers, names, secrets, expected",
    [
        ("names are lower-cased", [("Content-Type", "a/b")], set(), (), {"content-type": "a/b"}),
        ("a listed header is redacted whatever its case", [("AUTHORIZATION", "Bearer x")], {"authorization"}, (), {"authorization": "[REDACTED]"}),
        ("a repeated header becomes a list", [("Accept", "a"), ("accept", "b")], set(), (), {"accept": ["a", "b"]}),
        ("every repeat of a redacted header is redacted", [("Cookie", "a=1"), ("Cookie", "b=2")], {"cookie"}, (), {"cookie": ["[REDACTED]", "[REDACTED]"]}),
        ("an unlisted header carrying an injected secret is redacted", [("X-Token", "pre-s3cr3t-post")], set(), ("s3cr3t",), {"x-token": "[REDACTED]"}),
        ("an empty secret redacts nothing", [("X-A", "v")], set(), ("",), {"x-a": "v"}),
        ("other headers stay", [("X-A", "v"), ("X-Api-Key", "k")], {"x-api-key"}, (), {"x-a": "v", "x-api-key": "[REDACTED]"}),
    ],
)
def test_redact_headers(name, headers, names, secrets, expected):
    assert redact_headers(headers, names, secrets) == expected


def _exchange(**kw) -> Exchange:
    base = dict(
        timestamp=T0, flow_id="f-1", action="blocked", reason="content_blocked", duration=0.0125,
        rules=["aws-access-key"], ruleset="v-abc", client_ip="10.0.3.4", client_port=51000,
        client_user="github-mcp", client_label="github-mcp", dest_domain="api.github.com",
        dest_ip="140.82.1.1", dest_port=443, url="https://api.github.com/repos/x?q=1",
        http_version="1.1", method="POST",
        request_headers=[("Authorization", "Bearer INJECTED-TOKEN"), ("Content-Type", "application/json")],
        request_body=b'{"key":"AKIAABCDEFGHIJKLMNOP"}', status=403,
        response_headers=[("Content-Type", "application/json")], response_body=b'{"error":"content_blocked"}',
        sni="api.github.com", mcp_method="tools/call", mcp_tool="search_code", mcp_id=7,
        matches=[{"rule": "aws-access-key", "where": "request.body", "action": "block", "text": "AKIAABCDEFGHIJKLMNOP"}],
        secrets=("INJECTED-TOKEN",),
    )
    base.update(kw)
    return Exchange(**base)


def test_build_record_fields():
    r = build_record(_exchange())
    assert r["@timestamp"] == "2026-09-21T14:13:20.250Z"
    assert r["event"] == {"id": "f-1", "action": "blocked", "reason": "content_blocked", "duration": 12_500_000}
    assert r["rule"] == {"name": ["aws-access-key"], "ruleset": "v-abc"}
    assert r["client"] == {"ip": "10.0.3.4", "port": 51000, "user": {"name": "github-mcp"}}
    assert r["labels"] == {"client": "github-mcp"}
    assert r["destination"] == {"domain": "api.github.com", "ip": "140.82.1.1", "port": 443}
    assert r["url"] == {"full": "https://api.github.com/repos/x?q=1"}
    assert r["http"]["version"] == "1.1"
    assert r["http"]["request"]["method"] == "POST"
    assert r["http"]["request"]["headers"] == {"authorization": "[REDACTED]", "content-type": "application/json"}
    assert r["http"]["request"]["body"]["content"] == '{"key":"AKIAABCDEFGHIJKLMNOP"}'
    assert r["http"]["response"]["status_code"] == 403
    assert r["http"]["response"]["body"]["bytes"] == len(b'{"error":"content_blocked"}')
    assert r["tls"] == {"client": {"server_name": "api.github.com"}}
    assert r["mcp"] == {"method": "tools/call", "tool": "search_code", "id": 7}
    # The matched text is never in the match list: it may be the very secret.
    assert r["clearwall"] == {"matches": [{"rule": "aws-access-key", "where": "request.body", "action": "block"}]}
    assert "log" not in r
    orjson.dumps(r)


def test_build_record_omits_what_is_unknown():
    r = build_record(Exchange(timestamp=T0, flow_id="f-2", action="allowed"))
    assert r == {"@timestamp": "2026-09-21T14:13:20.250Z", "event": {"id": "f-2", "action": "allowed"}}


def test_false_and_zero_are_kept():
    r = build_record(Exchange(timestamp=T0, flow_id="f", action="allowed", mcp_id=0, duration=0.0, status=200,
                              response_body=b""))
    assert r["mcp"] == {"id": 0}
    assert r["event"]["duration"] == 0
    assert r["http"]["response"]["body"]["truncated"] is False


def test_injected_secret_never_appears_anywhere_in_the_record():
    ex = _exchange(
        url="https://api.example.com/?token=INJECTED-TOKEN",
        response_body=b'{"headers":{"Authorization":"Bearer INJECTED-TOKEN"}}',
        extra={"note": "INJECTED-TOKEN"},
    )
    text = orjson.dumps(build_record(ex)).decode()
    assert "INJECTED-TOKEN" not in text
    assert text.count("[REDACTED]") >= 4


def test_unknown_action_is_refused():
    with pytest.raises(ValueError, match="event.action"):
        build_record(Exchange(timestamp=T0, flow_id="f", action="passed"))


def test_extra_is_merged_into_nested_objects():
    r = build_record(_exchange(extra={"event": {"kind": "event"}, "network": {"protocol": "http"}}))
    assert r["event"]["kind"] == "event" and r["event"]["id"] == "f-1"
    assert r["network"] == {"protocol": "http"}


def test_connect_record():
    r = connect_record(Exchange(timestamp=T0, flow_id="c-1", action="blocked", reason="destination_denied",
                                rules=["paste-sites"], client_ip="10.0.0.2", dest_domain="pastebin.com", dest_port=443))
    assert r["event"] == {"id": "c-1", "action": "blocked", "reason": "destination_denied"}
    assert r["http"] == {"request": {"method": "CONNECT"}, "response": {"status_code": 403}}
    assert r["destination"] == {"domain": "pastebin.com", "port": 443}
    assert r["rule"] == {"name": ["paste-sites"]}


def test_tunnel_record():
    r = tunnel_record(Exchange(timestamp=T0, flow_id="t-1", action="allowed", duration=2.5, rules=["pinned-service"],
                               sni="pinned.example.com", dest_domain="pinned.example.com"),
                      bytes_up=1200, bytes_down=34000)
    assert r["event"] == {"id": "t-1", "action": "allowed", "duration": 2_500_000_000}
    assert r["client"] == {"bytes": 1200}
    assert r["destination"] == {"domain": "pinned.example.com", "bytes": 34000}
    assert r["tls"]["client"]["server_name"] == "pinned.example.com"
    assert r["network"]["type"] == "tls-passthrough"
    assert "http" not in r


def test_websocket_messages():
    ex = _exchange(action="blocked", messages=[
        Message("client", T0 + 1, "hello"),
        Message("server", T0 + 2, b"\x00\xff", "allowed"),
        Message("client", T0 + 3, "ignore previous instructions INJECTED-TOKEN", "blocked"),
    ])
    msgs = build_record(ex)["websocket"]["messages"]
    assert [m["direction"] for m in msgs] == ["client", "server", "client"]
    assert msgs[0]["time"] == iso_timestamp(T0 + 1)
    assert msgs[0]["content"]["content"] == "hello"
    assert msgs[1]["content"]["encoding"] == "base64"
    assert msgs[2]["action"] == "blocked"
    assert "INJECTED-TOKEN" not in orjson.dumps(msgs).decode()


def test_iso_timestamp_is_utc_with_milliseconds():
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(86400.9999) == "1970-01-02T00:00:00.999Z"


def test_a_secret_straddling_the_cut_leaves_no_part_behind():
    data = b"x" * 95 + b"tok-1234567890" + b"y" * 100
    body = body_field(data, content_type=None, max_bytes=100, secrets=("tok-1234567890",))
    assert "tok-" not in body["content"] and body["truncated"] is True
    assert body["content"] == "x" * 95 + "[REDA"


# Hashes of sealed lines as the log has always written them: record shaping may get faster,
# but the bytes of a record (and so every chain) must stay the same.
@pytest.mark.parametrize(
    "name, exchange, digest",
    [
        ("every field", _exchange(), "ab011c3a2215896c2cb34379fdfa03f307ee872c99abdd826baae9efb9a7de68"),
        (
            "websocket messages, binary and cut bodies, extra fields",
            _exchange(
                messages=[Message("client", T0 + 1, "hi"), Message("server", T0 + 2, b"\x00\xff", "blocked")],
                response_headers=[("Content-Type", "image/png")], response_body=b"\x89PNG" * 10,
                max_body_bytes=8, extra={"mcp": {"session_id": "s"}, 5: "five"},
            ),
            "c988fb0b47f9147bd5a956a3958b6c7174b0b4ceeba5b208ac2f0de2e18a5e00",
        ),
        ("nothing known", Exchange(timestamp=T0, flow_id="f-2", action="allowed"),
         "9553c7ce5cc40c53ad8bf32ce9808ef4a3af7ecbd676caac33e9949375fd954d"),
    ],
)
def test_sealed_records_keep_their_exact_bytes(name, exchange, digest):
    from clearwall.audit.chain import GENESIS, seal

    line, got = seal(build_record(exchange), GENESIS)
    assert got == digest
    assert line.endswith(b'"hash":"' + digest.encode() + b'"}}\n')


@pytest.mark.parametrize(
    "name, headers, secrets, encoding",
    [
        ("a binary type decides base64", [("Content-Type", "image/png")], (), "base64"),
        ("the first of repeated Content-Types decides", [("Content-Type", "image/png"), ("content-type", "text/plain")], (), "base64"),
        ("a Content-Type redacted for carrying a secret still decides",
         [("Content-Type", "image/png; x=tok-1")], ("tok-1",), "base64"),
        ("a text type keeps text", [("Content-Type", "text/plain")], (), "utf-8"),
        ("no Content-Type keeps text", [("X-A", "b")], (), "utf-8"),
    ],
)
def test_the_content_type_that_decides_the_body_encoding(name, headers, secrets, encoding):
    r = build_record(Exchange(timestamp=T0, flow_id="f", action="allowed", response_headers=headers,
                              response_body=b"abc", secrets=secrets))
    assert r["http"]["response"]["body"]["encoding"] == encoding
    assert "tok-1" not in orjson.dumps(r).decode()


@pytest.mark.parametrize(
    "epoch, text",
    [
        (1.0, "1970-01-01T00:00:01.000Z"),
        (1.999, "1970-01-01T00:00:01.999Z"),
        (2.0005, "1970-01-01T00:00:02.000Z"),
        (1.5, "1970-01-01T00:00:01.500Z"),  # back to an earlier second after a later one
        (T0, "2026-09-21T14:13:20.250Z"),
    ],
)
def test_iso_timestamp_in_consecutive_and_earlier_seconds(epoch, text):
    # Parametrised in this order on purpose: the second formatted last is remembered.
    assert iso_timestamp(epoch) == text


def test_an_exchange_can_be_completed_after_it_is_made():
    # The adapter fills decoded bodies and extra fields in the writer thread.
    ex = Exchange(timestamp=T0, flow_id="f", action="allowed")
    ex.request_body = b"decoded"
    ex.extra.setdefault("clearwall", {})["decode_errors"] = {"request": "x"}
    r = build_record(ex)
    assert r["http"]["request"]["body"]["content"] == "decoded"
    assert r["clearwall"] == {"decode_errors": {"request": "x"}}
    with pytest.raises(AttributeError):
        ex.not_a_field = 1  # slotted: a misspelt field fails loudly instead of being ignored
