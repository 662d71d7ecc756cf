"""Multi-pattern scanning with `regex` semantics and an optional Hyperscan prefilter.

The reference behaviour (engine="regex") is: for each applicable filter, every non-overlapping
match of its own compiled `regex` pattern, in filter order, kept when its validator agrees.
The fast engine returns exactly the same list:

1. Hyperscan databases per side (prefilter mode, relaxed patterns: relax.py; the bytes scanned
   and the databases: prefilter.py) report the end offsets where each filter may match. Clean
   traffic stops here, with no callback and no filter visited.
2. For each filter with a bounded width, `regex` confirms inside windows around those ends,
   continuing the reference iteration across windows so the non-overlapping semantics are
   unchanged. Filters with an unbounded width, more than `max_hits` possible ends, or no
   Hyperscan form are confirmed by a whole-text scan.

Every `regex` call gets the time left of the per-scan budget; running out raises ScanTimeout
(once retried when the thread was paused rather than busy, see Scanner.scan).
Hyperscan objects are shared; scratch space is per thread, so one Scanner serves many threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import regex

from . import relax
from .errors import ContentError, PatternError, ScanTimeout
from .prefilter import RESPONSE_TARGETS, Prefilter, _hs, prefilter_bytes, prefilter_bytes_utf8, remaining
from .spec import FilterSpec, Match
from .validators import Validator, parse_validator

if TYPE_CHECKING:  # stream.py imports this module
    from .stream import StreamScan

log = logging.getLogger(__name__)

ENGINES = ("auto", "hyperscan", "regex")


class _Filter:
    """A compiled filter: the `regex` pattern and what the prefilter knows about it."""

    __slots__ = ("index", "spec", "pattern", "group", "validator", "width", "context", "hs_expr", "literal")

    def __init__(self, index: int, spec: FilterSpec, want_hs: bool) -> None:
        self.index, self.spec = index, spec
        try:
            self.pattern = regex.compile(spec.pattern)
        except (regex.error, ValueError, OverflowError) as exc:
            raise PatternError(f"filter {spec.name!r}: pattern does not compile: {exc}") from None
        self.group = "secret" if "secret" in self.pattern.groupindex else 0
        try:
            self.validator: Validator | None = parse_validator(spec.validate) if spec.validate else None
        except ValueError as exc:
            raise PatternError(f"filter {spec.name!r}: {exc}") from None
        try:
            lo, hi = relax.width(spec.pattern)
            self.context = relax.context_width(spec.pattern)
            empty = lo == 0
        except relax.Unrelaxable:
            lo, hi, self.context = 0, relax.UNBOUNDED, relax.UNBOUNDED
            empty = any(m.start() == m.end() for m in self.pattern.finditer("", timeout=1.0)) or any(
                m.start() == m.end() for m in self.pattern.finditer("aZ0 _-.", timeout=1.0)
            )
        if empty:
            # An empty match would "find" the filter in every request (or everywhere in it).
            raise PatternError(f"filter {spec.name!r}: pattern can match the empty string")
        # Empty matches make finditer's stepping rules matter: always confirm on the whole text.
        self.width = hi if lo > 0 and self.context < relax.UNBOUNDED else relax.UNBOUNDED
        self.hs_expr: bytes | None = None
        self.literal = 0
        if want_hs and lo > 0:
            try:
                self.hs_expr = relax.hyperscan_pattern(spec.pattern)
                self.literal = relax.required_literal(spec.pattern)
            except relax.Unrelaxable as exc:
                log.debug("filter %s has no prefilter form: %s", spec.name, exc)

    def applies(self, base_target: str) -> bool:
        return base_target in self.spec.where

    def emit(self, m: regex.Match, text: str, target: str) -> Match | None:
        start, end = m.span(self.group)
        if start < 0:  # `secret` did not take part: the whole match is the finding
            start, end = m.span()
        if self.validator is not None and not self.validator(text[start:end]):
            return None
        return Match(self.spec.name, self.spec.action, target, start, end, self.spec.mode)


def _finditer(f: _Filter, text: str, pos: int, endpos: int, deadline: float):
    try:
        yield from f.pattern.finditer(text, pos, endpos, timeout=remaining(deadline))
    except TimeoutError:
        raise ScanTimeout(f"content scan exceeded its time limit in filter {f.spec.name!r}") from None


def check_pattern(pattern: str) -> None:
    """The checks a Scanner makes on one pattern (compiles, cannot match the empty string), so
    the rule loader can report a bad pattern at its file:line instead of at start-up."""
    _Filter(0, FilterSpec("pattern", pattern), want_hs=False)


class Scanner:
    """Scans text for a fixed list of filters. Immutable after construction; thread-safe."""

    def __init__(
        self,
        specs: Iterable[FilterSpec],
        *,
        timeout: float = 0.1,
        engine: str = "auto",
        overlap: int = 4096,
        max_hits: int = 4096,
        timeout_per_mib: float = 1.0,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if engine == "hyperscan" and _hs is None:
            raise ContentError("engine 'hyperscan' was asked for but the hyperscan package is not installed")
        if timeout <= 0 or overlap < 64 or max_hits < 1 or timeout_per_mib < 0:
            raise ValueError("timeout must be > 0, overlap >= 64, max_hits >= 1 and timeout_per_mib >= 0")
        self.timeout, self.overlap, self.max_hits = timeout, overlap, max_hits
        self.timeout_per_mib = timeout_per_mib
        want_hs = engine != "regex" and _hs is not None
        self.filters = [_Filter(i, s, want_hs) for i, s in enumerate(specs)]
        self._watched: dict[str, bool] = {}  # target -> any filter applies (a pure cache)
        self._plans: dict[str, _Plan] = {}  # target -> which filters apply, and how (a pure cache)
        names = [f.spec.name for f in self.filters]
        if len(set(names)) != len(names):
            raise PatternError("filter names must be unique")
        self._prefilter: Prefilter | None = None
        if want_hs:
            targets = {t for f in self.filters for t in f.spec.where}
            try:
                self._prefilter = Prefilter(self.filters, targets)
            except _hs.error as exc:  # a pattern set Hyperscan rejects as a whole
                log.warning("hyperscan prefilter unavailable, using regex only: %s", exc)
        self.engine = "hyperscan" if self._prefilter else "regex"

    def budget(self, length: int) -> float:
        """Seconds allowed for scanning `length` characters: the time limit, plus
        `timeout_per_mib` for each MiB, so linear work on a large body (thousands of genuine
        candidates to confirm) is not mistaken for a runaway pattern."""
        return self.timeout + self.timeout_per_mib * length / (1 << 20)

    def watches(self, target: str) -> bool:
        """Does any filter apply to `target` (`base|variant` counts as `base`)?"""
        base = target.split("|", 1)[0]
        hit = self._watched.get(base)
        if hit is None:
            hit = self._watched[base] = any(f.applies(base) for f in self.filters)
        return hit

    @property
    def engine_description(self) -> str:
        if self._prefilter is None:
            why = "hyperscan not installed" if _hs is None else "as configured"
            return f"regex ({why}) for {len(self.filters)} filters"
        slow = [f.spec.name for f in self.filters if not f.hs_expr]
        tail = f"; regex alone for: {', '.join(slow)}" if slow else ""
        return f"hyperscan prefilter + regex for {len(self.filters) - len(slow)} of {len(self.filters)} filters{tail}"

    def scan(self, text: str, target: str, *, deadline: float | None = None, raw: bytes | None = None) -> list[Match]:
        """All matches of the filters that apply to `target` (`base|variant` uses `base`).

        `raw`: the bytes `text` was decoded from, when the caller has them: either one byte per
        character by a codec that keeps ASCII as ASCII (ASCII, Latin-1, undecodable bytes kept
        as surrogates: both sides of 0x80 mean the same to the prefilter), which are the
        prefilter bytes already, or text's valid UTF-8, from which they are cheaper to derive.
        """
        if deadline is not None:
            return self._scan(text, target, deadline, raw)
        budget = self.budget(len(text))
        cpu = time.thread_time()
        try:
            return self._scan(text, target, time.monotonic() + budget, raw)
        except ScanTimeout:
            # The limit is wall-clock; it exists for patterns that burn CPU. When this thread
            # used under half of it, the clock ran out while it was not running (the VM paused,
            # another thread held the GIL): scan once more instead of refusing the flow.
            if time.thread_time() - cpu >= budget / 2:
                raise
            log.warning("content scan of %s outran its time limit while its thread was not running; rescanning",
                        target.split("|", 1)[0])
            return self._scan(text, target, time.monotonic() + budget, raw)

    def _scan(self, text: str, target: str, deadline: float, raw: bytes | None) -> list[Match]:
        base = target.split("|", 1)[0]
        plan = self._plans.get(base)
        if plan is None:
            plan = self._plans[base] = _Plan([f for f in self.filters if f.applies(base)])
        if not plan.applicable:
            return []
        if self._prefilter is None:
            return self._confirm_all(plan.applicable, text, target, deadline)
        data = None
        if raw is not None:
            data = raw if len(raw) == len(text) else prefilter_bytes_utf8(text, raw)
        if data is None:
            data = prefilter_bytes(text)
        remaining(deadline)
        try:
            hits = self._prefilter.ends(base, data, self.max_hits, deadline)
        except _hs.error as exc:  # fail closed: the reference engine gives the same answer
            remaining(deadline)  # a scan we stopped for time is a timeout, not an engine fault
            log.warning("hyperscan scan failed, confirming with regex: %s", exc)
            return self._confirm_all(plan.applicable, text, target, deadline)
        if not hits and not plan.regex_only:
            return []  # clean text: the common case, decided without touching a filter
        # Only filters with candidates (and those without a prefilter), in filter order: the
        # reference's order. Hits of filters that do not apply here (same database) are skipped.
        chosen = [plan.by_index[i] for i in hits if i in plan.by_index]
        chosen.extend(plan.regex_only)
        chosen.sort(key=_index)
        out: list[Match] = []
        for f in chosen:
            if f.hs_expr is None:
                out.extend(self._confirm(f, text, target, deadline))
            else:
                ends = hits[f.index] if f.width < relax.UNBOUNDED else None
                out.extend(self._confirm(f, text, target, deadline, ends))
        return out

    def _confirm_all(self, filters: list[_Filter], text: str, target: str, deadline: float) -> list[Match]:
        out: list[Match] = []
        for f in filters:
            out.extend(self._confirm(f, text, target, deadline))
        return out

    @staticmethod
    def _confirm(f: _Filter, text: str, target: str, deadline: float, ends: list[int] | None = None) -> list[Match]:
        out: list[Match] = []
        if ends is None:
            for m in _finditer(f, text, 0, len(text), deadline):
                if (hit := f.emit(m, text, target)) is not None:
                    out.append(hit)
            return out
        margin = f.width + f.context
        last_end = 0
        # Neighbouring windows closer than 256 characters are confirmed in one regex call.
        for lo, hi in _windows(ends, f.width, max(margin, 256)):
            pos = max(lo, last_end)
            if pos > hi:
                continue
            # Past hi + width + context nothing can change a match that starts by hi.
            for m in _finditer(f, text, pos, min(len(text), hi + margin), deadline):
                if m.start() > hi:
                    break
                last_end = m.end()
                if (hit := f.emit(m, text, target)) is not None:
                    out.append(hit)
        return out

    def stream(self, target: str, *, overlap: int | None = None) -> "StreamScan":
        from .stream import StreamScan

        return StreamScan(self, target, overlap=overlap or self.overlap)


class _Plan:
    """The filters that apply to one target: all, those with a prefilter by index, the rest."""

    __slots__ = ("applicable", "by_index", "regex_only")

    def __init__(self, applicable: list[_Filter]) -> None:
        self.applicable = applicable
        self.by_index = {f.index: f for f in applicable if f.hs_expr is not None}
        self.regex_only = [f for f in applicable if f.hs_expr is None]


def _index(f: _Filter) -> int:
    return f.index


def _windows(ends: list[int], width: int, margin: int) -> list[tuple[int, int]]:
    """Merged [start, end] ranges where a match ending at one of `ends` can start."""
    out: list[tuple[int, int]] = []
    for end in sorted(set(ends)):
        lo = max(0, end - width)
        if out and lo <= out[-1][1] + margin:
            out[-1] = (out[-1][0], end)
        else:
            out.append((lo, end))
    return out
