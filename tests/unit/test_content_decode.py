"""Bounded decoding: every Content-Encoding, stacked layers, bombs, corrupt bodies, forms."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
import zstandard

from clearwall.content.decode import MIN_RATIO_CHECK, decode_content, form_fields, parse_encodings
from clearwall.content.errors import DecodeError, TooLarge

RAW = b'{"items": [' + b",".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(2000)) + b"]}"


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


ENCODERS = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_each_encoding_round_trips(encoding):
    assert decode_content(ENCODERS[encoding](RAW), encoding, max_size=1 << 20) == RAW


def test_raw_deflate_without_zlib_header_is_accepted():
    assert decode_content(raw_deflate(RAW), "deflate", max_size=1 << 20) == RAW


def test_concatenated_gzip_members_are_all_decoded():
    assert decode_content(gzip.compress(b"one ") + gzip.compress(b"two"), "gzip", max_size=100) == b"one two"


@pytest.mark.parametrize(
    "header, layers",
    [("gzip, br", ["gzip", "br"]), ("br,gzip", ["br", "gzip"]), ("zstd, deflate, gzip", ["zstd", "deflate", "gzip"])],
)
def test_stacked_encodings_are_undone_last_first(header, layers):
    body = RAW
    for name in layers:
        body = ENCODERS[name](body)
    assert decode_content(body, header, max_size=1 << 20) == RAW


@pytest.mark.parametrize("header", [None, "", "identity", " identity , "])
def test_identity_is_a_no_op(header):
    assert decode_content(RAW, header, max_size=len(RAW)) == RAW


@pytest.mark.parametrize("header", ["compress", "gzip, lzma", "snappy"])
def test_unknown_encodings_are_undecodable(header):
    with pytest.raises(DecodeError, match="unsupported Content-Encoding"):
        parse_encodings(header)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_garbage_claiming_an_encoding_is_undecodable(encoding):
    with pytest.raises(DecodeError):
        decode_content(b"this is not compressed at all", encoding, max_size=1 << 20)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_truncated_bodies_are_undecodable(encoding):
    body = ENCODERS[encoding](RAW)
    with pytest.raises(DecodeError):
        decode_content(body[: len(body) // 2], encoding, max_size=1 << 20)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_size_cap_boundary(encoding):
    body = ENCODERS[encoding](RAW)
    assert decode_content(body, encoding, max_size=len(RAW), max_ratio=1e9) == RAW
    with pytest.raises(TooLarge):
        decode_content(body, encoding, max_size=len(RAW) - 1, max_ratio=1e9)


def test_identity_body_over_the_cap_is_too_large():
    with pytest.raises(TooLarge):
        decode_content(RAW, None, max_size=len(RAW) - 1)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_decompression_bomb_is_refused_without_inflating_it(encoding):
    fast = {"br": lambda d: brotli.compress(d, quality=1), "gzip": lambda d: gzip.compress(d, 1)}
    bomb = fast.get(encoding, ENCODERS[encoding])(b"\0" * (64 << 20))
    with pytest.raises(TooLarge):
        decode_content(bomb, encoding, max_size=1 << 30, max_ratio=100)


def test_ratio_cap_boundary():
    data = b"a" * (4 * MIN_RATIO_CHECK)
    body = gzip.compress(data)
    ratio = len(data) / len(body)
    assert decode_content(body, "gzip", max_size=1 << 30, max_ratio=ratio) == data
    with pytest.raises(TooLarge, match="ratio"):
        decode_content(body, "gzip", max_size=1 << 30, max_ratio=ratio * 0.99)


def test_small_outputs_are_not_held_to_the_ratio():
    tiny = gzip.compress(b"a" * 5000)
    assert decode_content(tiny, "gzip", max_size=1 << 20, max_ratio=2) == b"a" * 5000


def test_urlencoded_form_fields_are_decoded():
    assert form_fields(b"a=1&mail=x%40y.io&q=two+words", "application/x-www-form-urlencoded") == [
        ("a", "1"), ("mail", "x@y.io"), ("q", "two words"),
    ]


def test_multipart_form_fields_are_decoded_including_base64_parts():
    body = (
        b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"k.txt\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nc2VjcmV0\r\n--B--\r\n"
    )
    assert form_fields(body, "multipart/form-data; boundary=B") == [("note", "hello"), ("f", "secret")]


def test_multipart_without_boundary_is_undecodable():
    with pytest.raises(DecodeError, match="boundary"):
        form_fields(b"--B--", "multipart/form-data")


def test_other_content_types_have_no_fields():
    assert form_fields(RAW, "application/json") == []
