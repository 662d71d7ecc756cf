"""One-layer decoders for evasion variants: percent, JSON escapes, HTML entities, invisible
characters, and the judgement of whether decoded bytes are text worth rescanning."""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_JSON_ESCAPE = re.compile(r'\\(?:u[0-9A-Fa-f]{4}|[/"\\bfnrt])')
_JSON_SIMPLE = {"/": "/", '"': '"', "\\": "\\", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
# Invisible characters used to break a token apart: every format character (category Cf:
# zero-width, bidi controls, soft hyphen, tags; a test checks the list against unicodedata),
# variation selectors, combining grapheme joiner, Hangul fillers. Spelled out because `re` scans
# an explicit class several times faster than `regex` scans \p{Cf}.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F), (0xE0100, 0xE01EF),
)
INVISIBLE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _INVISIBLE_RANGES) + "]")
_FULLWIDTH_RANGES = ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0xFF3F, 0xFF3F))
INVISIBLE_CODEPOINTS = [c for a, b in (*_INVISIBLE_RANGES, *_FULLWIDTH_RANGES) for c in range(a, b + 1)]
# Full-width letters and digits (ｇｈｐ＿) folded to ASCII; CJK punctuation is left alone.
_FULLWIDTH = re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff3f]")
_FULLWIDTH_MAP = {c: c - 0xFEE0 for c in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B), 0xFF3F]}


_SAMPLE = 64 * 1024
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def as_text(raw: bytes) -> str | None:
    """Decoded bytes worth rescanning: mostly printable UTF-8 (not an image, not a hash).

    Undecodable bytes count against the text rather than rejecting it, so a secret stays
    visible when the run also carries a few binary bytes or starts mid-character.
    """
    if not raw:
        return None
    if raw.isascii():  # the common case, counted at C speed
        bad = len(raw.translate(None, _PRINTABLE_ASCII))
        return raw.decode("ascii") if bad <= 0.15 * len(raw) else None
    text = raw.decode("utf-8", "replace")
    sample = text[:_SAMPLE]  # judging a prefix keeps a huge decoded run from costing a Python loop
    good = sum(1 for c in sample if (c.isprintable() and c != "\ufffd") or c in "\t\r\n")
    return text if good >= 0.85 * len(sample) else None


def score(text: str) -> float:
    """Share of letters, digits and spaces: real text scores high, misaligned decodes low."""
    sample = text[:_SAMPLE]
    return sum(1 for c in sample if c.isalnum() or c == " ") / len(sample)


def has_percent(text: str) -> bool:
    return "%" in text and _PERCENT.search(text) is not None


def has_entity(text: str) -> bool:
    return "&" in text and _ENTITY.search(text) is not None


def percent(text: str) -> str | None:
    if not has_percent(text):
        return None
    return unquote(text, errors="surrogateescape")


def json_escapes(text: str) -> str | None:
    if "\\" not in text:
        return None

    def one(m: re.Match) -> str:
        s = m.group()
        return chr(int(s[2:], 16)) if s[1] == "u" else _JSON_SIMPLE[s[1]]

    out = _JSON_ESCAPE.sub(one, text)
    return out if out != text else None


def html_entities(text: str) -> str | None:
    if not has_entity(text):
        return None
    out = html.unescape(text)
    return out if out != text else None


def invisible(text: str) -> str | None:
    if text.isascii():
        return None
    out = INVISIBLE.sub("", text)
    if _FULLWIDTH.search(out):
        out = out.translate(_FULLWIDTH_MAP)
    return out if out != text else None
