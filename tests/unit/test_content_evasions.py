"""Decoded variants: each disguise is undone, two layers deep, within count and size limits."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote

import pytest

from clearwall.content.evasions import Evasions

TOKEN = "ghp_" + "Zx81qW7vT3mN5bV9cR2e" + "Lk4Jh6Gf8Ds0"


def enc_html(s: str) -> str:
    return "".join(f"&#{ord(c)};" if i % 3 == 0 else c for i, c in enumerate(s))


CASES = {
    "percent": (lambda s: quote("t=" + s + "&x=1", safe="").replace("_", "%5F"), "percent"),
    "double-percent": (lambda s: quote(quote(s, safe="").replace("_", "%5F"), safe=""), "percent+percent"),
    "base64": (lambda s: base64.b64encode(s.encode()).decode(), "base64"),
    "base64-glued-to-prefix": (lambda s: "x" + base64.b64encode(s.encode()).decode(), "base64"),
    "base64-urlsafe": (lambda s: base64.urlsafe_b64encode(b"\xfb\xff" + s.encode()).decode(), "base64"),
    "base64-inside-basic-auth": (lambda s: "Basic " + base64.b64encode(b"u:" + s.encode()).decode(), "base64"),
    "json-unicode-escapes": (lambda s: json.dumps(s).replace("g", "\\u0067").replace("_", "\\u005f"), "json"),
    "hex": (lambda s: s.encode().hex(), "hex"),
    "zero-width": (lambda s: "\u200b".join(s), "invisible"),
    "bidi-and-soft-hyphen": (lambda s: s[:5] + "\u00ad\u202e" + s[5:], "invisible"),
    "full-width": (lambda s: "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in s), "invisible"),
    "html-entities": (enc_html, "html"),
    "percent-of-base64": (lambda s: quote(base64.b64encode(s.encode() + b"??").decode(), safe=""), "percent+base64"),
    "base64-of-base64": (lambda s: base64.b64encode(base64.b64encode(s.encode())).decode(), "base64+base64"),
}


def without_hyperscan(**kwargs) -> Evasions:
    ev = Evasions(**kwargs)
    ev._finder = None  # the pure-Python run search used where hyperscan is not installed
    return ev


FINDERS = {"hyperscan-finder": Evasions, "python-fallback": without_hyperscan}


@pytest.mark.parametrize("finder", sorted(FINDERS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_disguise_is_undone(name, finder):
    encode, description = CASES[name]
    text = encode(TOKEN)
    assert TOKEN not in text
    variants = {v.description: v.text for v in FINDERS[finder]().variants(text)}
    assert description in variants, variants.keys()
    assert TOKEN in variants[description]


def test_depth_one_stops_after_one_layer():
    text = base64.b64encode(base64.b64encode(TOKEN.encode())).decode()
    variants = Evasions(max_depth=1).variants(text)
    assert [v.description for v in variants] == ["base64"]
    assert TOKEN not in variants[0].text


def test_variant_count_is_bounded():
    text = " ".join([quote("a@b"), "\\u0041", "&amp;", "\u200bx", "414243444546474849505152"] * 3)
    assert len(Evasions(max_variants=2).variants(text)) == 2
    assert len(Evasions(max_variants=64).variants(text)) > 2


def test_total_decoded_size_is_bounded():
    text = base64.b64encode(("secret " * 3000).encode()).decode()
    assert Evasions(max_total=1000).variants(text) == []
    assert Evasions(max_total=len(text)).variants(text) != []


@pytest.mark.parametrize("length, found", [(15, False), (16, True)])
def test_min_base64_run_boundary(length, found):
    raw = ("Secret!" * 10).encode()[: length * 3 // 4]
    text = base64.b64encode(raw).decode().rstrip("=")[:length]
    got = Evasions(min_base64=16).base64_runs(text)
    assert (got is not None) == found


@pytest.mark.parametrize(
    "benign",
    [
        "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 8).decode(),
        "sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "commit 3f2a9c41d7b8e0f6a5c4b3a2918d7e6f5a4b3c2d",
        "request_id=550e8400-e29b-41d4-a716-446655440000",
        '{"integrity": "sha512-' + base64.b64encode(bytes(range(64))).decode() + '"}',
        "internationalization localization_configuration_value",
        "plain ascii text with no disguise at all",
    ],
    ids=["png-data-uri", "sha256-hex", "git-sha", "uuid", "sri-hash", "long-identifiers", "plain-text"],
)
@pytest.mark.parametrize("finder", sorted(FINDERS))
def test_ordinary_content_yields_no_variant(benign, finder):
    assert FINDERS[finder]().variants(benign) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"max_depth": 0}, {"max_variants": 0}, {"max_total": 0}, {"min_base64": 7}, {"min_hex": 7}],
)
def test_bad_limits_are_refused(kwargs):
    with pytest.raises(ValueError):
        Evasions(**kwargs)


def test_html_entities_decoder_matches_the_stdlib():
    text = "&lt;b&gt; &#x67;hp &amp;"
    (v,) = Evasions().variants(text)
    assert v.text == html.unescape(text)


def test_every_format_character_counts_as_invisible():
    import sys
    import unicodedata

    from clearwall.content.textdecoders import INVISIBLE as _INVISIBLE

    missing = [hex(c) for c in range(sys.maxunicode + 1)
               if unicodedata.category(chr(c)) == "Cf" and not _INVISIBLE.match(chr(c))]
    assert missing == []


def test_secret_inside_base64_of_mostly_non_ascii_text_is_found():
    text = "Grüße, données, 数据 " * 50 + " token=" + TOKEN + " " + "数据 " * 50
    variants = Evasions().variants(base64.b64encode(text.encode()).decode())
    assert any(TOKEN in v.text for v in variants)


def test_huge_decoded_runs_are_judged_on_a_sample():
    import time

    blob = base64.b64encode(("Grüße " * 300_000 + TOKEN).encode()).decode()
    start = time.monotonic()
    variants = Evasions().variants(blob)
    assert time.monotonic() - start < 10
    assert any(TOKEN in v.text for v in variants)
