"""`logs tail -f`: every record exactly once, in order, even when several rotations (and
their compression) happen between two polls."""

from __future__ import annotations

import threading
import time

from clearwall.audit.follow import follow
from clearwall.audit.files import rotated_files
from clearwall.audit.writer import LogWriter


def rec(i: int) -> dict:
    return {"@timestamp": "2026-11-22T06:00:00.000Z", "event": {"id": f"e{i}"}, "pad": "p" * 200}


def collect(log_dir, stop, out, poll, from_end=True):
    for record in follow(log_dir, poll=poll, stop=stop.is_set, from_end=from_end):
        out.append(record["event"]["id"])


def wait(cond, timeout=10):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)


def test_many_rotations_between_two_polls(tmp_path):
    w = LogWriter(tmp_path, rotate_bytes=1200)  # about 3 records per file
    w.start()
    w.submit(rec(0))
    wait(lambda: w.records_written == 1)
    got: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=collect, args=(tmp_path, stop, got, 0.5))
    t.start()
    time.sleep(0.3)  # the follower is open at the end of the live file, sleeping
    for i in range(1, 31):
        w.submit(rec(i))
    w.close()  # ~10 rotations and compressions, all inside one poll interval
    wait(lambda: len(got) >= 30)
    stop.set()
    t.join(5)
    assert len(rotated_files(tmp_path)) >= 8
    assert got == [f"e{i}" for i in range(1, 31)]


def test_from_the_start_and_waiting_for_the_file(tmp_path):
    got: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=collect, args=(tmp_path, stop, got, 0.05, False))
    t.start()
    time.sleep(0.2)  # no log file yet: the follower waits for it
    w = LogWriter(tmp_path)
    w.start()
    for i in range(3):
        w.submit(rec(i))
    w.close()
    wait(lambda: len(got) >= 3)
    stop.set()
    t.join(5)
    assert got == ["e0", "e1", "e2"]
