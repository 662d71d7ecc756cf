"""`tail -f` for the body log: records appended to the live file, across rotations.

Several rotations can happen between two polls, so a rotation is caught up through the
rotated files using the chain: records are yielded after the last hash already shown, and
a record whose hash was shown is never shown twice.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import orjson

from clearwall.audit.files import LIVE, iter_lines, rotated_files


_TAIL_WINDOW = 4 * 1024 * 1024  # more than the largest record (bodies are capped)


def _parse(raw: bytes) -> dict | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _hash(record: dict):
    log = record.get("log")
    return log.get("hash") if isinstance(log, dict) else None


def _rotated_lines(path: Path) -> Iterator[bytes]:
    try:
        yield from iter_lines(path)
    except FileNotFoundError:
        # Compressed meanwhile: the plain file was replaced by its .gz.
        gz = path.with_name(path.name + ".gz")
        if gz.exists():
            yield from iter_lines(gz)


class Follower:
    def __init__(self, log_dir: Path, poll: float = 0.2) -> None:
        self.live = Path(log_dir) / LIVE
        self.log_dir = Path(log_dir)
        self.poll = poll
        self.shown: set[str] = set()  # hashes shown since the last rotation
        self.skip: set[str] = set()  # hashes the caller already printed (tail's last records)
        self.last: str | None = None
        self._f = None
        self._inode = None
        self._opened_at = 0.0
        self._buf = b""
        self._opened_once = False

    def start(self) -> None:
        """Take the current end of the log as the starting point now (before printing the
        last records, so nothing written in between is missed)."""
        self._open(at_end=True)

    def _emit(self, record: dict) -> Iterator[dict]:
        h = _hash(record)
        if h is not None:
            if h in self.shown or h in self.skip:
                return
            self.shown.add(h)
            self.last = h
        yield record

    def _lines(self, data: bytes) -> Iterator[dict]:
        *lines, self._buf = (self._buf + data).split(b"\n")
        for raw in lines:
            record = _parse(raw)
            if record is not None:
                yield from self._emit(record)

    def _open(self, at_end: bool) -> bool:
        try:
            self._f = open(self.live, "rb")
        except FileNotFoundError:
            return False
        self._inode = os.fstat(self._f.fileno()).st_ino
        self._opened_at = time.time()
        self._opened_once = True
        if at_end:
            self._start_at_end()
        return True

    def _start_at_end(self) -> None:
        """Seek past the last complete line and remember its hash, so a rotation right after
        does not replay the old file's records in the catch-up."""
        fd = self._f.fileno()
        end = os.fstat(fd).st_size
        window = os.pread(fd, min(end, _TAIL_WINDOW), end - min(end, _TAIL_WINDOW))
        cut = window.rfind(b"\n") + 1  # a line still being written is read later, whole
        self._f.seek(end - (len(window) - cut))
        lines = window[:cut].split(b"\n")
        record = _parse(lines[-2]) if len(lines) >= 2 else None
        if record is not None and _hash(record):
            self.last = _hash(record)
            self.shown = {self.last}

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.live)
        except FileNotFoundError:
            return False
        return st.st_ino != self._inode or st.st_size < self._f.tell()

    def _catch_up(self, opened_at: float) -> Iterator[dict]:
        """Records of files rotated since `opened_at` (when the previous live file was opened),
        after the last shown."""
        last = self.last
        self.shown = {last} if last else set()
        found = last is None
        for f in rotated_files(self.log_dir):
            if f.rotated_at < opened_at - 1.0:
                continue
            for raw in _rotated_lines(f.path):
                record = _parse(raw)
                if record is None:
                    continue
                if found:
                    yield from self._emit(record)
                elif _hash(record) == last:
                    found = True

    def run(self, stop: Callable[[], bool], from_end: bool = True) -> Iterator[dict]:
        while not stop():
            if self._f is None:
                # Only the very first open may start at the end; after a rotation the new
                # live file is read from its start.
                if not self._open(at_end=from_end and not self._opened_once):
                    time.sleep(self.poll)
                    continue
            chunk = self._f.read(1 << 20)
            if chunk:
                yield from self._lines(chunk)
                continue
            if not self._rotated():
                time.sleep(self.poll)
                continue
            # Rotated: finish the old file, then everything rotated since, then the new live
            # file from its start (records already shown by the catch-up are skipped). The new
            # live file is opened before the catch-up lists the rotated files: a rotation in
            # between would otherwise hide a whole file (one listed too late to be caught up,
            # and gone from the live name before it was opened).
            yield from self._lines(self._f.read())
            self._f.close()
            self._f, self._buf = None, b""
            since = self._opened_at
            self._open(at_end=False)
            yield from self._catch_up(since)
        if self._f is not None:
            self._f.close()


def follow(
    log_dir: Path,
    *,
    poll: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    from_end: bool = True,
) -> Iterator[dict]:
    return Follower(log_dir, poll).run(stop, from_end)
