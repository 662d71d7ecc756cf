"""Finding base64 and hex runs that may hold encoded text, and invisible characters.

With Hyperscan one pass over the UTF-8 bytes reports where the fingerprint of encoded text ends;
without it every run of the alphabet is examined in Python.
"""

from __future__ import annotations

import re
import threading

from .textdecoders import INVISIBLE_CODEPOINTS

try:  # finds candidate runs in one pass; without it every run of the alphabet is examined
    import hyperscan as _hs
except ImportError:  # pragma: no cover
    _hs = None


def have_hyperscan() -> bool:
    return _hs is not None

def _keep_table(keep: bytes) -> bytes:
    return bytes(c if c in keep else 0x20 for c in range(256))


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
B64_STD = _keep_table(_ALNUM + b"+/=")
B64_URL = _keep_table(_ALNUM + b"-_=")
HEX = _keep_table(b"0123456789abcdefABCDEF")
# Base64 of text has a fingerprint. Of each 4-character group, the first character holds the top
# six bits of a byte: for printable ASCII (and tab, LF, CR) one of C D I-Z a-f. The second holds
# the next byte's high nibble in its low four bits: 2-7 for printable ASCII, 0 for tab/LF/CR.
# Random identifiers and binary data (images, digests) rarely pass both.
_B64_FIRST = b"CDIJKLMNOPQRSTUVWXYZabcdef"
_B64_SECOND = b"ACDEFGHQSTUVWXgijklmnwyz0123"
# In hex of ASCII text every other digit is a byte's high nibble: 2-7 for printable bytes.
HEX_HIGH = b"234567"


_RUNS: dict[int, re.Pattern] = {}


def tokens(data: bytes, table: bytes, minimum: int) -> list[bytes]:
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


def mostly(sample: bytes, allowed: bytes, share: float = 0.8) -> bool:
    return len(sample) - len(sample.translate(None, allowed)) >= share * len(sample)


def b64_textlike(part: bytes) -> bool:
    head = part[:256]
    return mostly(head[0::4], _B64_FIRST, 0.85) and mostly(head[1::4], _B64_SECOND, 0.85)


class RunFinder:
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
        expressions.append(b"|".join(re.escape(chr(c).encode("utf-8", "surrogatepass")) for c in INVISIBLE_CODEPOINTS))
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
