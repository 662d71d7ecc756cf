"""The live log file seen from the writer thread: pending lines, writes, fsync, rotation.

Only the writer thread touches a LiveFile. Sealed lines wait in `pending` until they are on
disk; a failed write leaves them there (with the offset of a partly written first line), so
a retry writes each byte exactly once and the chain stays in order.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from clearwall.audit.files import LIVE, next_rotated_name
from clearwall.audit.rotation import Housekeeper

log = logging.getLogger(__name__)

DAY = 86400.0


def utc_day(epoch: float) -> int:
    return int(epoch // DAY)


class LiveFile:
    def __init__(
        self,
        log_dir: Path,
        *,
        rotate_bytes: int | None,
        batch_max: int,
        open_sink: Callable[[Path], Any],
        housekeeper: Housekeeper,
    ) -> None:
        self.path = log_dir / LIVE
        self.log_dir = log_dir
        self.rotate_bytes = rotate_bytes
        self.batch_max = batch_max
        self._open_sink = open_sink
        self._house = housekeeper
        self.file_day: int | None = None  # UTC day of the first record in the live file (set on start)
        self.pending: deque[bytes] = deque()
        self.records_written = 0
        self.write_errors = 0
        self.rotations = 0
        self.writable = True
        self.last_error: str | None = None
        self._offset = 0  # bytes of pending[0] already written
        self._sink = None
        self._dirty = False
        self.last_fsync = time.monotonic()

    def flush(self, now: float) -> bool:
        """Write pending lines, rotating where needed; False (and writable False) on error."""
        try:
            while self.pending:
                if self._sink is None:
                    self._sink = self._open_sink(self.path)
                if self._offset == 0 and self._should_rotate(len(self.pending[0]), now):
                    self.rotate(now)
                    continue
                self._write_some(now)
        except OSError as e:
            self._failed(e)
            return False
        if not self.writable:
            log.warning("body log writable again after %d failed attempt(s)", self.write_errors)
        self.writable = True
        return True

    def _failed(self, e: OSError, what: str = "") -> None:
        self.write_errors += 1
        self.last_error = f"{what}{self.path}: {e.strerror or e}"
        if self.writable:
            log.error("body log write failed, refusing new flows until it recovers: %s", self.last_error)
        self.writable = False
        self.close()

    def _write_some(self, now: float) -> None:
        """One writev of as many whole lines as fit before the next rotation point."""
        size = self._sink.size
        if size == 0 and self._offset == 0:
            self.file_day = utc_day(now)
        lines, total = [], -self._offset
        for line in self.pending:
            if lines and self.rotate_bytes is not None and size + total + len(line) > self.rotate_bytes:
                break
            lines.append(line)
            total += len(line)
            if len(lines) >= self.batch_max:
                break
        if self._offset:
            lines[0] = memoryview(lines[0])[self._offset :]
        written = 0
        try:
            written = self._sink.writev(lines)
            if written < total:
                # A short write (disk filling up): continue with plain writes, which raise
                # ENOSPC if the disk is really full, keeping the rest pending.
                buf = memoryview(b"".join(lines))
                while written < total:
                    written += self._sink.write(buf[written:])
        finally:
            self._consume(self._offset + written)
            if written:
                self._dirty = True

    def _consume(self, nbytes: int) -> None:
        """Drop the lines fully covered by nbytes from the head of pending."""
        while self.pending and nbytes >= len(self.pending[0]):
            nbytes -= len(self.pending.popleft())
            self.records_written += 1
        self._offset = nbytes

    def _should_rotate(self, next_len: int, now: float) -> bool:
        size = self._sink.size
        if size == 0:
            return False
        if self.rotate_bytes is not None and size + next_len > self.rotate_bytes:
            return True
        return self.file_day is not None and utc_day(now) != self.file_day

    def rotate(self, now: float) -> None:
        """flows.jsonl → flows-<now>.jsonl (compressed later by the housekeeper)."""
        self.sync()
        self.close()
        target = self.log_dir / next_rotated_name(self.log_dir, now)
        os.rename(self.path, target)
        self.rotations += 1
        self.file_day = None
        self._sink = self._open_sink(self.path)
        self._house.compress_later(target)
        self._house.expire_later(now)

    def rotate_if_new_day(self, now: float) -> None:
        """Called while idle: close the day's file on time even when no record arrives."""
        if self.pending or self.file_day is None or utc_day(now) == self.file_day:
            return
        try:
            if not self.path.exists() or self.path.stat().st_size == 0:
                return
            if self._sink is None:
                self._sink = self._open_sink(self.path)
            self.rotate(now)
        except OSError as e:
            self._failed(e, "rotating ")

    def sync(self) -> None:
        if self._sink is None or not self._dirty:
            return
        try:
            self._sink.fsync()
            self._dirty = False
        except OSError as e:
            # Written pages may be lost (EIO): refuse new flows until a write succeeds again.
            self._failed(e, "fsync ")
        self.last_fsync = time.monotonic()

    @property
    def dirty(self) -> bool:
        return self._dirty

    def close(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            try:
                sink.close()
            except OSError:
                pass
