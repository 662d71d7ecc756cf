"""The Hyperscan side of the scanner: the bytes it scans and the databases it scans them with.

Hyperscan sees one byte per character of the text (see relax.py for why the relaxed patterns
accept what they accept): ASCII as itself, the three characters `regex` folds to ASCII letters as
those letters, every other character as some byte of 0x80-0xFF. `Prefilter` holds the compiled
databases and reports where each filter may end; scanner.py confirms with `regex`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from . import relax
from .errors import ScanTimeout

try:  # Hyperscan is an accelerator only; without it every filter runs on `regex`.
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised where the wheel is missing
    _hs = None

RESPONSE_TARGETS = frozenset({"response.headers", "response.body", "sse", "websocket"})


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ScanTimeout("content scan exceeded its time limit")
    return left


# UTF-8 continuation bytes vanish and lead bytes (0xC2-0xF4) stay: one byte of 0x80-0xFF per
# non-ASCII character, at bytes.translate speed (the codec error-handler route is ~20x slower
# on scattered accents).
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))


def prefilter_bytes(text: str) -> bytes:
    """`text` as one byte per character: ASCII as itself, U+0130/U+212A/U+017F as i/k/s, every
    other non-ASCII character as some byte of 0x80-0xFF. Hyperscan offsets are character offsets."""
    if text.isascii():
        return text.encode("ascii")
    try:
        # Every character below U+0100 (accented Latin text): a copy, ~50x faster than the
        # UTF-8 route. None of the three folding characters is below U+0100.
        return text.encode("latin-1")
    except UnicodeEncodeError:
        pass
    for char, letter in relax.FOLD_MAP.items():
        if char in text:
            text = text.replace(char, letter)
    # surrogatepass: lone surrogates (from JSON \ud800 escapes) are characters too.
    return text.encode("utf-8", "surrogatepass").translate(None, _UTF8_CONTINUATION)


def prefilter_bytes_utf8(text: str, data: bytes) -> bytes | None:
    """prefilter_bytes(text) computed from `data`, the valid UTF-8 encoding of text: its
    continuation bytes deleted (one pass, ~3x faster than re-encoding a wide string). None
    when a folding character is present (it must become its ASCII letter: use the text). The
    folding characters are looked for in the text: searching the UTF-8 for their two- and
    three-byte forms is ~10x slower among CJK text's continuation bytes."""
    if any(c in text for c in relax.FOLD_MAP):
        return None
    return data.translate(None, _UTF8_CONTINUATION)


class Prefilter:
    """Hyperscan databases per distinct set of filters a target uses (shared, read-only).

    Filters with any required literal (even one byte: `@`, `Q~`, `SK`) share one database,
    where their literals join the shared literal matcher almost for free (measured: +0.02 ms
    per MiB each for most). Literal-free filters (card numbers) get a second database: such a
    pattern runs an automaton over every byte, and inside the shared one it cost more still.
    """

    ANCHOR = 1

    def __init__(self, filters: list[_Filter], targets: Iterable[str]) -> None:
        self._local = threading.local()
        self._dbs: dict[frozenset[int], list[object]] = {}
        self.by_target: dict[str, frozenset[int]] = {}
        # One database set per direction, not per target: the request targets share most
        # filters, and compiling takes ~0.3 s per database. scan() only confirms the filters
        # that apply to its target, so hits of the others cost a callback at most.
        sides: dict[str, set[str]] = {}
        for target in targets:
            sides.setdefault("response" if target in RESPONSE_TARGETS else "request", set()).add(target)
        for side_targets in sides.values():
            ids = frozenset(f.index for f in filters if f.hs_expr and any(f.applies(t) for t in side_targets))
            for target in side_targets:
                self.by_target[target] = ids
            if ids and ids not in self._dbs:
                chosen = [f for f in filters if f.index in ids]
                groups = [[f for f in chosen if f.literal >= self.ANCHOR], [f for f in chosen if f.literal < self.ANCHOR]]
                self._dbs[ids] = [self._compile(g) for g in groups if g]

    @staticmethod
    def _compile(filters: list[_Filter]):
        db = _hs.Database()
        db.compile(
            expressions=[f.hs_expr for f in filters],
            ids=[f.index for f in filters],
            elements=len(filters),
            flags=[_hs.HS_FLAG_PREFILTER] * len(filters),
        )
        return db

    def _scratch(self, db) -> object:
        cache = getattr(self._local, "scratch", None)
        if cache is None:
            cache = self._local.scratch = {}
        scratch = cache.get(id(db))
        if scratch is None:
            scratch = cache[id(db)] = _hs.Scratch(db)
        return scratch

    def ends(self, target: str, data: bytes, limit: int, deadline: float) -> dict[int, list[int] | None]:
        """Possible match end offsets per filter; None for a filter with more than `limit`."""
        ids = self.by_target.get(target)
        if not ids:
            return {}
        found: dict[int, list[int] | None] = {}
        calls = 0

        def on_match(index, _from, to, _flags, _ctx):
            nonlocal calls
            ends = found.get(index, ())
            if ends is None:
                pass
            elif len(ends) >= limit:
                found[index] = None  # confirm this filter on the whole text instead
            elif ends:
                ends.append(to)
            else:
                found[index] = [to]
            calls += 1
            # Hyperscan is linear, but a hostile body can make it call back per byte.
            return not calls & 0x3FF and time.monotonic() > deadline

        for db in self._dbs[ids]:
            db.scan(data, match_event_handler=on_match, scratch=self._scratch(db))
        remaining(deadline)
        return found
