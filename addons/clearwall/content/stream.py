"""Scanning text that arrives in chunks (streamed bodies, SSE, WebSocket fragments).

The scanner keeps the last `3 * L` characters, where L is the overlap window (at least the widest
bounded filter plus its look-ahead). After each chunk it rescans that tail plus the new text and
reports only matches that are "settled": starting at least L characters after the kept text's
beginning (so look-behinds and `\\b` saw real context) and ending at least L characters before the
current end (so a longer continuation cannot change them). Consecutive settled zones overlap by L,
so every match of at most L characters is found, once, with absolute offsets. `finish()` settles
the rest. Matches longer than L (unbounded patterns) may be missed across a boundary or reported
shortened: libraries ship bounded patterns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import relax
from .spec import Match

if TYPE_CHECKING:
    from .scanner import Scanner


class StreamScan:
    """Incremental scan of one target. Not thread-safe: one stream per body / connection."""

    def __init__(self, scanner: Scanner, target: str, *, overlap: int) -> None:
        base = target.split("|", 1)[0]
        widths = [
            f.width + f.context for f in scanner.filters if f.applies(base) and f.width < relax.UNBOUNDED
        ]
        self.window = max([overlap, *widths])
        self._scanner, self._target = scanner, target
        self._buf = ""
        self._base = 0  # absolute offset of _buf[0]
        self._emitted_to: dict[str, int] = {}
        self._finished = False

    @property
    def position(self) -> int:
        """Characters fed so far."""
        return self._base + len(self._buf)

    def feed(self, chunk: str) -> list[Match]:
        if self._finished:
            raise ValueError("feed() after finish()")
        self._buf += chunk
        end = self.position
        settled_end = end - self.window
        if settled_end <= self._settled_start():
            return []
        out = self._scan(settled_end)
        keep = 3 * self.window
        if len(self._buf) > keep:
            self._base += len(self._buf) - keep
            self._buf = self._buf[-keep:]
        return out

    def finish(self) -> list[Match]:
        if self._finished:
            return []
        self._finished = True
        return self._scan(None)

    def _settled_start(self) -> int:
        return self._base + self.window if self._base else 0

    def _scan(self, settled_end: int | None) -> list[Match]:
        start = self._settled_start()
        out: list[Match] = []
        for m in self._scanner.scan(self._buf, self._target):
            a, b = m.start + self._base, m.end + self._base
            if a < start or (settled_end is not None and b > settled_end):
                continue
            if a < self._emitted_to.get(m.filter, 0):
                continue  # already reported from the previous, overlapping buffer
            self._emitted_to[m.filter] = b
            out.append(Match(m.filter, m.action, m.target, a, b, m.mode))
        return out
