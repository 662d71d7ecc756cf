"""The body-log writer: a bounded queue in front of one thread that seals, writes and rotates.

`submit()` only enqueues (microseconds, safe on the event loop). The writer thread turns each
item into a record, chains it (so write order is chain order), appends it to flows.jsonl in
batches, fsyncs per policy and rotates by size and UTC day. A failed write (ENOSPC, EACCES)
keeps the unwritten records, flips `writable` to False (the adapter then refuses new flows
with inspection_error) and is retried until it succeeds: no record is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from clearwall.audit import chain
from clearwall.audit.batchqueue import BatchQueue, Full, Heavy
from clearwall.audit.errors import AuditError, LogBackpressure, LogClosed
from clearwall.audit.livefile import LiveFile, utc_day
from clearwall.audit.record import Exchange, build_record, error_record
from clearwall.audit.recovery import recover
from clearwall.audit.rotation import Housekeeper
from clearwall.audit.settings import check_settings
from clearwall.audit.sink import FileSink
from clearwall.audit.waiters import Waiters

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DAY = 86400.0
_STOP = object()


class LogWriter:
    """See the module docstring; counters and `writable` are read from any thread."""

    def __init__(
        self,
        log_dir: Path | str,
        *,
        max_queue: int = 10000,
        max_queue_bytes: int | None = 256 * MiB,
        fsync: str = "interval",
        fsync_interval: float = 1.0,
        rotate_bytes: int | None = 100 * MiB,
        retention_seconds: float | None = 90 * DAY,
        clock: Callable[[], float] = time.time,
        retry_interval: float = 0.5,
        batch_max: int = 512,
        write_bytes: int = 256 * 1024,
        housekeeping_nice: int = 10,
        open_sink: Callable[[Path], Any] = FileSink,
    ) -> None:
        check_settings(fsync=fsync, max_queue=max_queue, max_queue_bytes=max_queue_bytes,
                       batch_max=batch_max, write_bytes=write_bytes, rotate_bytes=rotate_bytes,
                       retention_seconds=retention_seconds, housekeeping_nice=housekeeping_nice)
        self.log_dir = Path(log_dir)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.rotate_bytes = rotate_bytes
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.retry_interval = retry_interval
        self.batch_max = batch_max
        self.write_bytes = write_bytes
        self._open_sink = open_sink
        self.build_errors = 0  # records that could not be shaped; an error record stands in
        # Weighed in the body bytes queued Exchanges hold: they reference whole bodies (up to
        # the size caps) until the writer has hashed them, so the queue is bounded in bytes as
        # well as in records.
        self._q = BatchQueue(max_queue, max_queue_bytes)
        self._prev_hash = chain.GENESIS
        self._last_expire = 0.0
        self._waiters = Waiters()
        self._accepting = False
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clearwall-log-writer", daemon=True)
        self._house = Housekeeper(self.log_dir, retention_seconds, nice=housekeeping_nice)
        self._file = LiveFile(self.log_dir, rotate_bytes=rotate_bytes, batch_max=batch_max,
                              open_sink=open_sink, housekeeper=self._house)

    # ----- caller side -------------------------------------------------------------------

    # Read by the metrics addon and by the adapter's gate (plain values, no locking needed).
    @property
    def writable(self) -> bool:
        """False after a failed write until a retry succeeds, and whenever the writer thread is
        not running (never started, or died): refuse new flows meanwhile."""
        return self._file.writable and self._thread.is_alive()

    @property
    def records_written(self) -> int:
        return self._file.records_written

    @property
    def write_errors(self) -> int:
        return self._file.write_errors

    @property
    def rotations(self) -> int:
        return self._file.rotations

    @property
    def last_error(self) -> str | None:
        return self._file.last_error

    @property
    def queue_depth(self) -> int:
        """Records accepted but not yet on disk."""
        return self._q.qsize() + len(self._file.pending)

    @property
    def prev_hash(self) -> str:
        """Hash of the last record sealed (what the next record will chain to)."""
        return self._prev_hash

    def start(self) -> None:
        """Recover the directory (chain head, unfinished rotations) and start the threads."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AuditError(f"cannot create log directory {self.log_dir}: {e.strerror}") from e
        state = recover(self.log_dir)
        self._prev_hash = state.prev_hash
        self._file.file_day = None if state.first_time is None else utc_day(state.first_time)
        self._house.start()
        for plain in state.uncompressed:
            self._house.compress_later(plain)
        self._house.expire_later(self.clock())
        self._last_expire = self.clock()
        self._accepting = True
        self._thread.start()

    def submit(self, item: dict | Exchange | Callable[[], dict], *, held_bytes: int | None = None) -> None:
        """Enqueue a record (a dict, an Exchange, or a callable building one in the writer
        thread). Never blocks; raises LogBackpressure when the queue is full (refuse the flow).
        held_bytes: memory the item keeps alive until written (bodies); computed for an
        Exchange, pass it for a callable that closes over bodies."""
        if not self._accepting or not self._thread.is_alive():
            raise LogClosed("the body log writer is not running; the record was not accepted")
        size = queued_bytes_of(item) if held_bytes is None else held_bytes
        try:
            self._q.put_nowait(item, size)
        except Full:
            raise LogBackpressure(
                f"the body log queue is full ({self.max_queue} records); the record was not accepted"
            ) from None
        except Heavy:
            raise LogBackpressure(
                f"the body log queue holds {self._q.weight} body bytes (limit "
                f"{self.max_queue_bytes}); the record was not accepted"
            ) from None

    @property
    def queued_bytes(self) -> int:
        """Body bytes referenced by queued Exchanges."""
        return self._q.weight

    async def submit_async(
        self, item: dict | Exchange | Callable[[], dict], *, held_bytes: int | None = None
    ) -> None:
        """Enqueue a record, waiting (without blocking the loop) while the queue is full."""
        while True:
            try:
                return self.submit(item, held_bytes=held_bytes)
            except LogBackpressure:
                pass
            fut = self._waiters.add()
            try:
                # Re-check after registering: the writer may have made room in between.
                return self.submit(item, held_bytes=held_bytes)
            except LogBackpressure:
                await fut

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, write every queued record, fsync, finish rotations. A record that
        still cannot be written when timeout expires is reported in Clearwall's own log."""
        if not self._thread.is_alive():
            self._accepting = False
            if self.queue_depth:
                log.error("body log closed with %d record(s) unwritten (the writer had stopped): %s",
                          self.queue_depth, self.last_error)
            return
        deadline = time.monotonic() + timeout
        self._accepting = False
        self._q.put_nowait(_STOP, force=True)  # behind every record already accepted
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(1.0)
        self._house.close(max(0.1, deadline - time.monotonic()))
        self._waiters.wake_all()
        lost = self.queue_depth
        if lost:
            log.error("body log closed with %d record(s) unwritten: %s", lost, self.last_error)
        else:
            # Kept outside the log directory (Clearwall's own log), this hash lets
            # `clearwall logs verify --expect-head` detect records deleted from the end.
            log.info("body log closed: %d record(s) written, head hash %s", self.records_written, self._prev_hash)

    # ----- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        # An unexpected error must not end the thread (records would queue up unwritten):
        # say so, refuse new flows until a write succeeds, and go on.
        while True:
            try:
                return self._loop()
            except Exception:
                log.exception("body log writer error; refusing new flows until a write succeeds")
                self._file.writable = False
                if self._abort.wait(self.retry_interval):
                    return

    def _loop(self) -> None:
        stopping = False
        tick = min(self.fsync_interval, 1.0) if self.fsync == "interval" else 1.0
        while True:
            if self._abort.is_set():
                break
            if self._file.pending:
                if not self._file.flush(self.clock()):
                    # Keep the records and retry; only close()'s deadline gives up.
                    if self._abort.wait(self.retry_interval):
                        break
                    continue
                self._after_write()
            if stopping:
                break
            batch = self._take(tick)
            # The marker exists only once close() has begun. A record that raced close() may
            # follow it: that record was accepted, so it is written too.
            if not self._accepting and any(entry is _STOP for entry in batch):
                batch = [entry for entry in batch if entry is not _STOP]
                stopping = True
            if batch:
                self._seal(batch)
            else:
                self._idle()
        if self.fsync != "never":
            self._file.sync()
        self._file.close()

    def _take(self, tick: float) -> list:
        batch = self._q.get_batch(self.batch_max, tick)
        if batch:
            self._waiters.wake_all()
        return batch

    def _seal(self, batch: list) -> None:
        # Lines are written every write_bytes rather than once per batch: a few hundred KiB
        # written while still in the CPU cache, and memory the allocator reuses instead of
        # fresh pages to fault in, cost a fraction of one multi-MiB write per batch.
        pending = self._file.pending
        unwritten = 0
        for item in batch:
            line, self._prev_hash = self._seal_one(self._build(item))
            pending.append(line)
            unwritten += len(line)
            if unwritten >= self.write_bytes and self._file.writable:
                unwritten = 0
                if self._file.flush(self.clock()):
                    self._after_write()
                # A failed write keeps its lines pending; the main loop retries them.

    def _seal_one(self, record: dict) -> tuple[bytes, str]:
        try:
            return chain.seal(record, self._prev_hash)
        except (TypeError, ValueError) as e:  # orjson cannot encode a value
            self.build_errors += 1
            return chain.seal(error_record(record, e, self.clock()), self._prev_hash)

    def _build(self, item) -> dict:
        try:
            if isinstance(item, dict):
                return item
            if isinstance(item, Exchange):
                return build_record(item)
            return item()
        except Exception as e:  # a bug in shaping must still leave a trace in the log
            self.build_errors += 1
            log.exception("cannot build a body log record")
            return error_record(item, e, self.clock())

    def _after_write(self) -> None:
        if self.fsync == "every" or (
            self.fsync == "interval" and time.monotonic() - self._file.last_fsync >= self.fsync_interval
        ):
            self._file.sync()

    def _idle(self) -> None:
        if self.fsync != "never" and self._file.dirty:
            self._file.sync()
        now = self.clock()
        if self.retention_seconds is not None and now - self._last_expire >= 3600:
            self._house.expire_later(now)
            self._last_expire = now
        self._file.rotate_if_new_day(now)


def queued_bytes_of(item) -> int:
    """Body bytes an item keeps alive while queued (bodies and WebSocket messages of an Exchange)."""
    if isinstance(item, Exchange):
        held = len(item.request_body or b"") + len(item.response_body or b"")
        return held + sum(len(m.content) for m in item.messages) if item.messages else held
    return 0
