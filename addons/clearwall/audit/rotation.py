"""Compression of rotated files and deletion past retention, in one helper thread.

Compressing 100 MiB takes seconds; doing it in the writer thread would stall the log queue,
and doing it on the event loop would stall the proxy. Jobs run in submission order.
"""

from __future__ import annotations

import gzip
import logging
import os
import queue
import shutil
import threading
from pathlib import Path

from clearwall.audit.files import parse_rotated
from clearwall.audit.retention import note_and_delete

log = logging.getLogger(__name__)

_STOP = object()


def compress(plain: Path, level: int = 6) -> Path:
    """plain → plain.gz (written to .tmp, fsynced, renamed), then plain removed."""
    final = plain.with_name(plain.name + ".gz")
    tmp = plain.with_name(plain.name + ".gz.tmp")
    with open(plain, "rb") as src, open(tmp, "wb") as raw:
        # mtime=0 keeps the archive bytes a pure function of the content.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=level, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1024 * 1024)
        raw.flush()
        os.fsync(raw.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, final)
    plain.unlink()
    return final


def expired(log_dir: Path, now: float, retention_seconds: float) -> list[Path]:
    """Rotated files (both forms) whose rotation time is older than now - retention."""
    out = []
    for name in os.listdir(log_dir):
        parsed = parse_rotated(name)
        if parsed is not None and parsed[0] < now - retention_seconds:
            out.append((parsed[0], parsed[1], parsed[2], log_dir / name))
    return [path for *_, path in sorted(out)]


def lower_priority(steps: int) -> None:
    """Raise the calling thread's nice value by steps (at most to 19); where that is not
    possible the thread keeps running at its priority."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))
    except (OSError, AttributeError) as e:  # not Linux, or not permitted
        log.debug("log housekeeping keeps its priority: %s", e)


class Housekeeper:
    """Runs compress and retention jobs one at a time in a daemon thread.

    The thread lowers its own scheduling priority by `nice` steps: compressing a 100 MiB file
    takes about a second of CPU, which on a busy machine should come from idle time rather
    than from the log writer and the proxy (Linux schedules threads individually).
    """

    def __init__(self, log_dir: Path, retention_seconds: float | None, nice: int = 10) -> None:
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be between 0 and 19, not {nice}")
        self.log_dir = log_dir
        self.retention_seconds = retention_seconds
        self.nice = nice
        self.errors = 0
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="clearwall-log-housekeeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def compress_later(self, plain: Path) -> None:
        self._jobs.put(("compress", plain))

    def expire_later(self, now: float) -> None:
        if self.retention_seconds is not None:
            self._jobs.put(("expire", now))

    def close(self, timeout: float) -> bool:
        """Finish queued jobs; True when they all ran within timeout."""
        self._jobs.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        if self.nice:
            lower_priority(self.nice)
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            kind, arg = job
            try:
                if kind == "compress":
                    compress(arg)
                else:
                    for path in expired(self.log_dir, arg, self.retention_seconds):
                        log.info("deleting %s: past log retention", path)
                        note_and_delete(path, arg)
            except Exception as e:  # the thread must outlive any one bad file
                # A plain rotated file stays readable; the next start-up retries compressing.
                self.errors += 1
                log.error("log housekeeping (%s %s) failed: %s", kind, arg, e)
