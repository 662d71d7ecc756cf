"""The writer: ordering, chain, close() flushing, back-pressure, write failures and recovery."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path

import orjson
import pytest

from clearwall.audit.chain import GENESIS
from clearwall.audit.errors import AuditError, LogBackpressure, LogClosed
from clearwall.audit.record import Exchange
from clearwall.audit.sink import FileSink
from clearwall.audit.verify import verify
from clearwall.audit.writer import LogWriter


def rec(i: int) -> dict:
    return {"@timestamp": "2026-11-22T06:00:00.000Z", "event": {"id": f"e{i}", "action": "allowed"}}


def lines(log_dir: Path) -> list[dict]:
    return [orjson.loads(x) for x in (log_dir / "flows.jsonl").read_bytes().splitlines()]


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


class FlakySink(FileSink):
    """A real file whose writes fail with an errno while `failing` is set; optionally
    writes part of the buffer first, as a disk that fills up mid-write does."""

    failing = threading.Event()
    partial = False

    def write(self, data):
        if self.failing.is_set():
            if self.partial and len(data) > 10:
                FlakySink.partial = False
                return super().write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)

    def writev(self, buffers):
        return self.write(b"".join(bytes(b) for b in buffers))


class GatedSink(FileSink):
    """A real file whose writes wait until `gate` opens (a slow disk)."""

    gate = threading.Event()

    def write(self, data):
        self.gate.wait(10)
        return super().write(data)

    def writev(self, buffers):
        self.gate.wait(10)
        return super().writev(buffers)


@pytest.fixture
def writers():
    made = []
    yield made
    for w in made:
        w.close(timeout=2)


def make(tmp_path, writers, **kw) -> LogWriter:
    w = LogWriter(tmp_path, **kw)
    w.start()
    writers.append(w)
    return w


def test_records_are_written_in_order_with_a_valid_chain(tmp_path, writers):
    w = make(tmp_path, writers)
    for i in range(500):
        w.submit(rec(i))
    w.close()
    got = lines(tmp_path)
    assert [r["event"]["id"] for r in got] == [f"e{i}" for i in range(500)]
    assert got[0]["log"]["prev_hash"] == GENESIS
    assert all(got[i]["log"]["prev_hash"] == got[i - 1]["log"]["hash"] for i in range(1, 500))
    assert w.records_written == 500 and w.queue_depth == 0
    assert verify(tmp_path).ok


def test_close_flushes_everything_from_many_threads(tmp_path, writers):
    w = make(tmp_path, writers, fsync="every")
    def burst(t):
        for i in range(300):
            w.submit(rec(t * 1000 + i))
    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    ids = {r["event"]["id"] for r in lines(tmp_path)}
    assert len(ids) == 1200 and w.records_written == 1200
    assert verify(tmp_path).ok


def test_submit_after_close_is_refused(tmp_path, writers):
    w = make(tmp_path, writers)
    w.close()
    with pytest.raises(LogClosed):
        w.submit(rec(0))


def test_submit_before_start_is_refused(tmp_path):
    with pytest.raises(LogClosed):
        LogWriter(tmp_path).submit(rec(0))


def test_exchanges_and_callables_are_built_in_the_writer_thread(tmp_path, writers):
    w = make(tmp_path, writers)
    w.submit(Exchange(timestamp=0, flow_id="x1", action="allowed", method="GET"))
    w.submit(lambda: rec(2))
    w.close()
    got = lines(tmp_path)
    assert got[0]["event"]["id"] == "x1" and got[0]["http"]["request"]["method"] == "GET"
    assert got[1]["event"]["id"] == "e2"


def test_a_record_that_cannot_be_built_leaves_an_error_record(tmp_path, writers):
    w = make(tmp_path, writers)
    w.submit(Exchange(timestamp=0, flow_id="bad", action="not-an-action"))
    w.submit({"event": {"id": "unencodable"}, "x": object()})
    w.close()
    got = lines(tmp_path)
    assert [(r["event"]["id"], r["event"]["action"], r["event"]["reason"]) for r in got] == [
        ("bad", "error", "log_record_error"),
        ("unencodable", "error", "log_record_error"),
    ]
    assert w.build_errors == 2 and verify(tmp_path).ok


@pytest.mark.parametrize("max_queue, accepted", [(1, 1), (5, 5)])
def test_a_full_queue_refuses_instead_of_dropping(tmp_path, writers, max_queue, accepted):
    GatedSink.gate.clear()
    w = make(tmp_path, writers, max_queue=max_queue, open_sink=GatedSink, batch_max=1)
    w.submit(rec(-1))  # taken by the writer thread, which then waits on the gate
    assert wait_for(lambda: w._q.qsize() == 0)
    for i in range(accepted):
        w.submit(rec(i))
    with pytest.raises(LogBackpressure, match="queue is full"):
        w.submit(rec(99))
    GatedSink.gate.set()
    w.close()
    assert [r["event"]["id"] for r in lines(tmp_path)] == ["e-1"] + [f"e{i}" for i in range(accepted)]


def test_submit_async_waits_for_room_without_blocking_the_loop(tmp_path, writers):
    GatedSink.gate.clear()
    w = make(tmp_path, writers, max_queue=2, open_sink=GatedSink, batch_max=1)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.create_task(ticker())
        producer = asyncio.gather(*(w.submit_async(rec(i)) for i in range(20)))
        await asyncio.sleep(0.2)
        assert not producer.done()  # held back: the queue is full
        assert ticks >= 10  # the loop kept running meanwhile
        GatedSink.gate.set()
        await asyncio.wait_for(producer, 5)
        t.cancel()

    asyncio.run(main())
    w.close()
    assert sorted(r["event"]["id"] for r in lines(tmp_path)) == sorted(f"e{i}" for i in range(20))


def test_submit_returns_in_microseconds(tmp_path, writers):
    w = make(tmp_path, writers, max_queue=20000)
    record = rec(0)
    record["http"] = {"request": {"body": {"content": "x" * 4096}}}
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        w.submit(record)
        times.append(time.perf_counter() - t)
    times.sort()
    assert times[len(times) // 2] < 50e-6  # generous for a shared 2-core machine


@pytest.mark.parametrize("partial", [False, True], ids=["write refused", "half written then refused"])
def test_disk_full_flips_writable_and_recovers_without_losing_records(tmp_path, writers, partial):
    FlakySink.failing.clear()
    w = make(tmp_path, writers, open_sink=FlakySink, retry_interval=0.02)
    for i in range(10):
        w.submit(rec(i))
    assert wait_for(lambda: w.records_written == 10)
    FlakySink.partial = partial
    FlakySink.failing.set()
    for i in range(10, 20):
        w.submit(rec(i))
    assert wait_for(lambda: not w.writable)
    assert wait_for(lambda: w.write_errors >= 2)  # retried
    assert w.records_written < 20 and w.queue_depth > 0
    FlakySink.failing.clear()
    assert wait_for(lambda: w.writable and w.records_written == 20)
    w.close()
    assert [r["event"]["id"] for r in lines(tmp_path)] == [f"e{i}" for i in range(20)]
    assert verify(tmp_path).ok


def test_unopenable_file_is_a_write_error_until_it_opens(tmp_path, writers):
    state = {"deny": True}

    def opener(path):
        if state["deny"]:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return FileSink(path)

    w = make(tmp_path, writers, open_sink=opener, retry_interval=0.02)
    w.submit(rec(0))
    assert wait_for(lambda: not w.writable and w.write_errors >= 1)
    assert "Permission denied" in w.last_error
    state["deny"] = False
    assert wait_for(lambda: w.writable and w.records_written == 1)


def test_close_gives_up_after_its_timeout_when_the_disk_stays_full(tmp_path, writers):
    FlakySink.failing.set()
    w = make(tmp_path, writers, open_sink=FlakySink, retry_interval=0.02)
    w.submit(rec(0))
    t = time.monotonic()
    w.close(timeout=0.5)
    FlakySink.failing.clear()
    assert time.monotonic() - t < 3
    assert w.records_written == 0 and w.queue_depth == 1


def test_restart_continues_the_chain(tmp_path, writers):
    w = make(tmp_path, writers)
    w.submit(rec(0))
    w.close()
    head = lines(tmp_path)[-1]["log"]["hash"]
    w2 = make(tmp_path, writers)
    assert w2.prev_hash == head
    w2.submit(rec(1))
    w2.close()
    got = lines(tmp_path)
    assert got[1]["log"]["prev_hash"] == head
    assert verify(tmp_path).ok


def test_restart_moves_a_torn_last_line_aside(tmp_path, writers):
    w = make(tmp_path, writers)
    w.submit(rec(0))
    w.close()
    with open(tmp_path / "flows.jsonl", "ab") as f:
        f.write(b'{"@timestamp":"2026-11-22T06:00:00.000Z","ev')  # crash mid-write
    w2 = make(tmp_path, writers)
    w2.submit(rec(1))
    w2.close()
    assert [r["event"]["id"] for r in lines(tmp_path)] == ["e0", "e1"]
    aside = list(tmp_path.glob("flows.jsonl.partial-*"))
    assert len(aside) == 1 and aside[0].read_bytes().endswith(b'"ev')
    assert verify(tmp_path).ok


def test_restart_refuses_a_live_file_whose_last_record_has_no_hash(tmp_path):
    (tmp_path / "flows.jsonl").write_bytes(b'{"event":{"id":"x"}}\n')
    with pytest.raises(AuditError, match="log.hash"):
        LogWriter(tmp_path).start()


def test_unusable_log_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match="cannot create log directory"):
        LogWriter(blocker / "logs").start()


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"fsync": "sometimes"}, "fsync"),
        ({"max_queue": 0}, "max_queue"),
        ({"max_queue_bytes": 0}, "max_queue_bytes"),
        ({"rotate_bytes": 0}, "rotate_bytes"),
        ({"retention_seconds": 0}, "retention_seconds"),
        ({"batch_max": 0}, "batch_max"),
        ({"batch_max": 1025}, "batch_max"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        LogWriter(tmp_path, **kw)


@pytest.mark.parametrize("mode", ["every", "interval", "never"])
def test_every_fsync_mode_writes_everything(tmp_path, writers, mode):
    w = make(tmp_path, writers, fsync=mode, fsync_interval=0.01)
    for i in range(50):
        w.submit(rec(i))
    w.close()
    assert len(lines(tmp_path)) == 50


def test_log_file_is_private(tmp_path, writers):
    w = make(tmp_path, writers)
    w.submit(rec(0))
    w.close()
    assert os.stat(tmp_path / "flows.jsonl").st_mode & 0o077 == 0


def _big(i: int, size: int) -> Exchange:
    return Exchange(timestamp=0, flow_id=f"b{i}", action="allowed", request_body=b"x" * size)


@pytest.mark.parametrize(
    "limit, accepted",
    [
        (3000, 3),  # three 1000-byte bodies fit exactly
        (2999, 2),  # one byte short: the third is refused
    ],
)
def test_the_queue_is_bounded_in_body_bytes(tmp_path, writers, limit, accepted):
    GatedSink.gate.clear()
    w = make(tmp_path, writers, max_queue_bytes=limit, open_sink=GatedSink, batch_max=1)
    w.submit(rec(-1))  # taken by the writer thread, which then waits on the gate
    assert wait_for(lambda: w._q.qsize() == 0)
    for i in range(accepted):
        w.submit(_big(i, 1000))
    assert w.queued_bytes == accepted * 1000
    with pytest.raises(LogBackpressure, match="body bytes"):
        w.submit(_big(99, 1000))
    w.submit(rec(100))  # records without bodies still fit
    GatedSink.gate.set()
    w.close()
    assert w.queued_bytes == 0
    assert [r["event"]["id"] for r in lines(tmp_path)] == ["e-1"] + [f"b{i}" for i in range(accepted)] + ["e100"]


def test_one_oversized_record_is_accepted_into_an_empty_queue(tmp_path, writers):
    w = make(tmp_path, writers, max_queue_bytes=10)
    w.submit(_big(0, 1000))
    w.close()
    assert [r["event"]["id"] for r in lines(tmp_path)] == ["b0"]


def test_a_callable_declares_the_bytes_it_holds(tmp_path, writers):
    GatedSink.gate.clear()
    w = make(tmp_path, writers, max_queue_bytes=1500, open_sink=GatedSink, batch_max=1)
    w.submit(rec(-1))
    assert wait_for(lambda: w._q.qsize() == 0)
    body = b"x" * 1000
    w.submit(lambda: rec(0), held_bytes=len(body))
    with pytest.raises(LogBackpressure, match="body bytes"):
        w.submit(lambda: rec(1), held_bytes=len(body))
    GatedSink.gate.set()
    w.close()
    assert [r["event"]["id"] for r in lines(tmp_path)] == ["e-1", "e0"]


class FsyncFailingSink(FileSink):
    """A real file whose fsync fails once with EIO (written pages may be lost)."""

    fail = threading.Event()

    def fsync(self):
        if self.fail.is_set():
            self.fail.clear()
            raise OSError(errno.EIO, "Input/output error")
        return super().fsync()


def test_a_failed_fsync_refuses_new_flows_until_a_write_succeeds(tmp_path, writers):
    FsyncFailingSink.fail.set()
    w = make(tmp_path, writers, open_sink=FsyncFailingSink, fsync="every", retry_interval=0.02)
    w.submit(rec(0))
    assert wait_for(lambda: not w.writable)
    assert "fsync" in w.last_error
    w.submit(rec(1))  # the next write succeeds: writable again, nothing lost
    assert wait_for(lambda: w.writable and w.records_written == 2)


def test_a_stray_file_shaped_like_a_rotation_does_not_stop_the_writer(tmp_path, writers):
    (tmp_path / "flows-20261399T000000.000000Z.jsonl.gz").write_bytes(b"")  # no such date
    w = make(tmp_path, writers, rotate_bytes=200)
    for i in range(6):
        w.submit(rec(i))
    assert wait_for(lambda: w.records_written == 6) and w.writable


def test_an_unexpected_writer_error_refuses_flows_and_the_writer_goes_on(tmp_path, writers, monkeypatch):
    w = make(tmp_path, writers, retry_interval=0.02)
    real, calls = w._file.flush, []

    def flaky(now):
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("a bug in the writer")
        return real(now)

    monkeypatch.setattr(w._file, "flush", flaky)
    w.submit(rec(0))
    assert wait_for(lambda: w.records_written == 1)  # retried after the error, not lost
    assert w._thread.is_alive() and w.writable


def test_submit_to_a_writer_whose_thread_stopped_is_refused(tmp_path):
    w = LogWriter(tmp_path)
    w.start()
    w._abort.set()  # the thread ends as if it had died
    w._thread.join(5)
    with pytest.raises(LogClosed):
        w.submit(rec(0))
    w.close()


def test_a_callable_that_cannot_build_its_record_leaves_an_error_record_under_its_flow_id(tmp_path, writers):
    import functools

    def broken():
        raise ValueError("bad record")

    build = functools.partial(broken)
    build.flow_id = "flow-123"  # as the body-log adapter labels what it submits
    w = make(tmp_path, writers)
    w.submit(build)
    assert wait_for(lambda: w.records_written == 1)
    w.close()
    assert lines(tmp_path)[0]["event"] == {"id": "flow-123", "action": "error", "reason": "log_record_error"}
