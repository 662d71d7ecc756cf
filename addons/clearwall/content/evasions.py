"""Decoded variants of a text, so a secret cannot slip out merely encoded.

Each decoder undoes one common disguise: percent-encoding, JSON string escapes, base64 and hex
runs, invisible format characters, HTML entities. Variants are decoded again, `max_depth` layers
deep (`percent+base64` is base64 found after percent-decoding), and bounded in number and total
size: an adversary cannot make inspection expensive by stacking encodings. A decoder that does
not change the text produces no variant, so ordinary traffic costs one cheap check per decoder.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

try:  # finds candidate runs in one pass; without it every run of the alphabet is examined
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None

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
_INVISIBLE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _INVISIBLE_RANGES) + "]")
_FULLWIDTH_RANGES = ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A), (0xFF3F, 0xFF3F))
_INVISIBLE_CODEPOINTS = [c for a, b in (*_INVISIBLE_RANGES, *_FULLWIDTH_RANGES) for c in range(a, b + 1)]
# Full-width letters and digits (ｇｈｐ＿) folded to ASCII; CJK punctuation is left alone.
_FULLWIDTH = re.compile(r"[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\uff3f]")
_FULLWIDTH_MAP = {c: c - 0xFEE0 for c in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B), 0xFF3F]}


@dataclass(frozen=True, slots=True)
class Variant:
    description: str  # e.g. "percent", "json+base64"
    text: str


_SAMPLE = 64 * 1024
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F)) + b"\t\r\n"


def _as_text(raw: bytes) -> str | None:
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


def _score(text: str) -> float:
    """Share of letters, digits and spaces: real text scores high, misaligned decodes low."""
    sample = text[:_SAMPLE]
    return sum(1 for c in sample if c.isalnum() or c == " ") / len(sample)


def percent(text: str) -> str | None:
    if "%" not in text or not _PERCENT.search(text):
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
    if "&" not in text or not _ENTITY.search(text):
        return None
    out = html.unescape(text)
    return out if out != text else None


def invisible(text: str) -> str | None:
    if text.isascii():
        return None
    out = _INVISIBLE.sub("", text)
    if _FULLWIDTH.search(out):
        out = out.translate(_FULLWIDTH_MAP)
    return out if out != text else None


def _keep_table(keep: bytes) -> bytes:
    return bytes(c if c in keep else 0x20 for c in range(256))


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64_STD = _keep_table(_ALNUM + b"+/=")
_B64_URL = _keep_table(_ALNUM + b"-_=")
_HEX = _keep_table(b"0123456789abcdefABCDEF")
# Base64 of text has a fingerprint. Of each 4-character group, the first character holds the top
# six bits of a byte: for printable ASCII (and tab, LF, CR) one of C D I-Z a-f. The second holds
# the next byte's high nibble in its low four bits: 2-7 for printable ASCII, 0 for tab/LF/CR.
# Random identifiers and binary data (images, digests) rarely pass both.
_B64_FIRST = b"CDIJKLMNOPQRSTUVWXYZabcdef"
_B64_SECOND = b"ACDEFGHQSTUVWXgijklmnwyz0123"
# In hex of ASCII text every other digit is a byte's high nibble: 2-7 for printable bytes.
_HEX_HIGH = b"234567"


_RUNS: dict[int, re.Pattern] = {}


def _tokens(data: bytes, table: bytes, minimum: int) -> list[bytes]:
    """Maximal runs of one alphabet: translate the rest to spaces, then let `re` pick the long
    runs in C (no Python loop over the many short words)."""
    runs = _RUNS.get(minimum)
    if runs is None:
        runs = _RUNS[minimum] = re.compile(rb"[^ ]{%d,}" % minimum)
    out: list[bytes] = []
    for token in runs.findall(data.translate(table)):
        if b"=" in token:  # '=' is padding: "key=dG9r..." holds the run after '='
            out.extend(p for p in token.split(b"=") if len(p) >= minimum)
        else:
            out.append(token)
    return out


def _mostly(sample: bytes, allowed: bytes, share: float = 0.8) -> bool:
    return len(sample) - len(sample.translate(None, allowed)) >= share * len(sample)


def _b64_textlike(part: bytes) -> bool:
    head = part[:256]
    return _mostly(head[0::4], _B64_FIRST, 0.85) and _mostly(head[1::4], _B64_SECOND, 0.85)


class _RunFinder:
    """One Hyperscan pass that finds where encoded text may be, instead of examining every run.

    The patterns are the fingerprints described above (`_B64_FIRST`/`_B64_SECOND` for each
    4-character group, printable high nibbles for hex), over the minimum run length.
    """

    KINDS = ("std", "url", "hex", "invisible")

    def __init__(self, min_base64: int, min_hex: int) -> None:
        first = b"[" + re.escape(_B64_FIRST) + b"]"
        second = b"[" + re.escape(_B64_SECOND) + b"]"
        groups = min_base64 // 4
        expressions = [
            b"(?:%s%s[A-Za-z0-9+/]{2}){%d}" % (first, second, groups),
            b"(?:%s%s[A-Za-z0-9_-]{2}){%d}" % (first, second, groups),
            b"(?:[2-7][0-9A-Fa-f]){%d}" % (min_hex // 2),
        ]
        # Any invisible or full-width character, as UTF-8 bytes: one report is enough.
        expressions.append(b"|".join(re.escape(chr(c).encode("utf-8", "surrogatepass")) for c in _INVISIBLE_CODEPOINTS))
        single = _hs.HS_FLAG_SINGLEMATCH
        self._db = _hs.Database()
        self._db.compile(expressions=expressions, ids=[0, 1, 2, 3], elements=4, flags=[0, 0, 0, single])
        self._local = threading.local()

    def scan(self, data: bytes) -> dict[str, list[int]]:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _hs.Scratch(self._db)
        found: dict[str, list[int]] = {}

        def on_match(index, _from, to, _flags, _ctx):
            found.setdefault(self.KINDS[index], []).append(to)

        self._db.scan(data, match_event_handler=on_match, scratch=scratch)
        return found


class Evasions:
    """Generates decoded variants of a text. Immutable and thread-safe."""

    def __init__(
        self,
        *,
        max_depth: int = 2,
        max_variants: int = 32,
        max_total: int = 16 * 1024 * 1024,
        min_base64: int = 16,
        min_hex: int = 16,
    ) -> None:
        if max_depth < 1 or max_variants < 1 or max_total < 1 or min_base64 < 8 or min_hex < 8:
            raise ValueError("max_depth, max_variants, max_total >= 1; min_base64, min_hex >= 8")
        self.max_depth, self.max_variants, self.max_total = max_depth, max_variants, max_total
        self.min_base64, self.min_hex = min_base64, min_hex
        self._finder = _RunFinder(min_base64, min_hex) if _hs is not None else None
        self._local = threading.local()
        self.decoders: list[tuple[str, Callable[[str], str | None]]] = [
            ("percent", percent),
            ("json", json_escapes),
            ("base64", self.base64_runs),
            ("hex", self.hex_runs),
            ("invisible", self.invisible),
            ("html", html_entities),
        ]

    def _analyse(self, text: str) -> tuple[bytes, dict[str, list[int]] | None]:
        """UTF-8 bytes of `text` and the finder's report, computed once per text and thread."""
        last = getattr(self._local, "last", None)
        if last is not None and last[0] is text:
            return last[1], last[2]
        data = text.encode("utf-8", "surrogatepass")
        report = self._finder.scan(data) if self._finder is not None else None
        self._local.last = (text, data, report)
        return data, report

    def invisible(self, text: str) -> str | None:
        if text.isascii():
            return None
        _data, report = self._analyse(text)
        if report is not None and "invisible" not in report:
            return None
        return invisible(text)

    def _runs(self, text: str, kind: str) -> list[bytes]:
        """Candidate runs of one alphabet (`std`, `url`, `hex`) at least the minimum long."""
        table, minimum = {"std": (_B64_STD, self.min_base64), "url": (_B64_URL, self.min_base64),
                          "hex": (_HEX, self.min_hex)}[kind]
        data, report = self._analyse(text)
        if report is None:
            return _tokens(data, table, minimum)
        ends = report.get(kind)
        if not ends:
            return []
        # Hyperscan saw the fingerprint of encoded text ending at these offsets: widen each to
        # its whole run of the alphabet.
        mapped = data.translate(table)
        out, covered = [], -1
        for end in ends:
            if end <= covered:
                continue
            start = mapped.rfind(b" ", 0, end) + 1
            stop = mapped.find(b" ", end)
            covered = stop = len(mapped) if stop < 0 else stop
            out.extend(p for p in data[start:stop].split(b"=") if len(p) >= minimum)
        return out

    def base64_runs(self, text: str) -> str | None:
        """Runs of >= min_base64 base64 (standard or URL-safe) characters that decode to text."""
        found: list[str] = []
        seen: set[bytes] = set()
        for kind, urlsafe in (("std", False), ("url", True)):
            for run in self._runs(text, kind):
                # Base64 of text mixes cases; identifiers, hex digests and numbers do not.
                if run.islower() or run.isupper() or run.isdigit() or run in seen:
                    continue
                if urlsafe and b"-" not in run and b"_" not in run:
                    continue  # plain alphanumeric runs were already tried as standard base64
                seen.add(run)
                # With the finder, the run already showed the fingerprint of encoded text
                # somewhere (perhaps only around a secret inside non-ASCII text).
                decoded = self._decode_base64(run, urlsafe, checked=self._finder is not None)
                if decoded:
                    found.append(decoded)
        return "\n".join(found) or None

    def _decode_base64(self, run: bytes, urlsafe: bool, *, checked: bool = False) -> str | None:
        # A run may start mid-group (glued to a prefix): keep the alignment that decodes to the
        # most printable text.
        best: tuple[float, str] | None = None
        for shift in range(4):
            part = run[shift:]
            if len(part) % 4 == 1:
                part = part[:-1]  # one dangling character carries no whole byte
            if len(part) < self.min_base64 or not (checked or _b64_textlike(part)):
                continue
            part += b"=" * (-len(part) % 4)
            try:
                raw = base64.b64decode(part, altchars=b"-_" if urlsafe else None, validate=True)
            except (binascii.Error, ValueError):
                continue
            decoded = _as_text(raw)
            if decoded and (best is None or _score(decoded) > best[0]):
                best = (_score(decoded), decoded)
        return best[1] if best else None

    def hex_runs(self, text: str) -> str | None:
        """Runs of >= min_hex hex digits that decode to text."""
        found = []
        for run in self._runs(text, "hex"):
            if not _mostly(run[0:64:2], _HEX_HIGH, 0.6) and not _mostly(run[1:65:2], _HEX_HIGH, 0.6):
                continue  # a digest or an id, not hex-encoded text (quick look at the start)
            for shift in (0, 1):
                part = run[shift : len(run) - (len(run) - shift) % 2]
                if len(part) < self.min_hex or not _mostly(part[0::2], _HEX_HIGH, 0.9):
                    continue
                decoded = _as_text(bytes.fromhex(part.decode("ascii")))
                if decoded:
                    found.append(decoded)
        return "\n".join(found) or None

    def variants(self, text: str) -> list[Variant]:
        """Decoded variants, breadth first, each different from the text it came from."""
        try:
            return self._variants(text)
        finally:
            self._local.last = None  # do not keep the last body alive between calls

    def _variants(self, text: str) -> list[Variant]:
        out: list[Variant] = []
        total = 0
        layer = [Variant("", text)]
        for _depth in range(self.max_depth):
            next_layer = []
            for parent in layer:
                for name, decode in self.decoders:
                    decoded = decode(parent.text)
                    if decoded is None or decoded == parent.text:
                        continue
                    if len(out) >= self.max_variants or total + len(decoded) > self.max_total:
                        return out
                    desc = f"{parent.description}+{name}" if parent.description else name
                    v = Variant(desc, decoded)
                    out.append(v)
                    next_layer.append(v)
                    total += len(decoded)
            layer = next_layer
        return out
