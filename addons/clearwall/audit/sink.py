"""The live log file as a raw file descriptor, so a short or failed write is known exactly.

A buffered file object may have written part of a buffer when it raises (ENOSPC), leaving
no way to resume without duplicating or losing bytes; os.write reports the count written.
"""

from __future__ import annotations

import os
from pathlib import Path


class FileSink:
    """Append-only writer of one file; write() returns the number of bytes written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self._fd).st_size

    def write(self, data: memoryview | bytes) -> int:
        n = os.write(self._fd, data)
        self.size += n
        return n

    def writev(self, buffers: list) -> int:
        """Write several buffers in one system call (no joined copy); bytes written."""
        n = os.writev(self._fd, buffers)
        self.size += n
        return n

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
