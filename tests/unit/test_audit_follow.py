"""`logs tail -f`: every record exactly once, in order, even when several rotations (and
their compression) happen between two polls."""

from __future__ import annotations

import threading
import time

import orjson

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


def test_a_rotation_right_after_starting_does_not_replay_old_records(tmp_path):
    probe = LogWriter(tmp_path / "probe")
    probe.start()
    probe.submit(rec(0))
    probe.close()
    line_len = (tmp_path / "probe" / "flows.jsonl").stat().st_size
    w = LogWriter(tmp_path, rotate_bytes=5 * line_len)
    w.start()
    for i in range(5):  # fills the live file exactly: the next record rotates it
        w.submit(rec(i))
    wait(lambda: w.records_written == 5)
    rotations = w.rotations
    assert rotations == 0
    got: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=collect, args=(tmp_path, stop, got, 0.2))
    t.start()
    time.sleep(0.3)
    for i in range(5, 8):
        w.submit(rec(i))
    w.close()
    wait(lambda: len(got) >= 3)
    time.sleep(0.5)  # anything replayed would show up now
    stop.set()
    t.join(5)
    assert w.rotations > rotations
    assert got == ["e5", "e6", "e7"]


def test_a_line_being_written_at_start_is_shown_once_complete(tmp_path):
    w = LogWriter(tmp_path)
    w.start()
    w.submit(rec(0))
    w.close()
    live = tmp_path / "flows.jsonl"
    line = orjson.dumps({"event": {"id": "e9"}, "pad": "p" * 100}) + b"\n"
    got: list[str] = []
    stop = threading.Event()
    with open(live, "ab") as f:
        f.write(line[:50])  # half a record, still being written
        f.flush()
        t = threading.Thread(target=collect, args=(tmp_path, stop, got, 0.05))
        t.start()
        time.sleep(0.3)
        f.write(line[50:])
    wait(lambda: got)
    stop.set()
    t.join(5)
    assert got == ["e9"]


def test_records_written_between_start_and_run_are_shown_once(tmp_path):
    from clearwall.audit.follow import Follower

    w = LogWriter(tmp_path)
    w.start()
    w.submit(rec(0))
    wait(lambda: w.records_written == 1)
    f = Follower(tmp_path, poll=0.05)
    f.start()  # e.g. `tail -f` before it prints the last records
    for i in (1, 2):
        w.submit(rec(i))
    wait(lambda: w.records_written == 3)
    printed = orjson.loads((tmp_path / "flows.jsonl").read_bytes().splitlines()[1])  # e1, printed as a last record
    f.skip = {printed["log"]["hash"]}
    got: list[str] = []
    stop = threading.Event()

    def run():
        for record in f.run(stop=stop.is_set):
            got.append(record["event"]["id"])

    t = threading.Thread(target=run)
    t.start()
    w.submit(rec(3))
    w.close()
    wait(lambda: len(got) >= 2)
    time.sleep(0.2)
    stop.set()
    t.join(5)
    assert got == ["e2", "e3"]


def test_rotations_while_catching_up_lose_no_file(tmp_path, monkeypatch):
    from clearwall.audit import follow as follow_mod

    w = LogWriter(tmp_path, rotate_bytes=1200)  # about 3 records per file
    w.start()
    w.submit(rec(0))
    wait(lambda: w.records_written == 1)
    real, calls = follow_mod.rotated_files, []

    def listing(log_dir):
        files = real(log_dir)
        if not calls:  # the first catch-up: more rotations land right after its listing
            for i in range(4, 12):
                w.submit(rec(i))
            wait(lambda: w.records_written == 12)
        calls.append(len(files))
        return files

    monkeypatch.setattr(follow_mod, "rotated_files", listing)
    got: list[str] = []
    stop = threading.Event()
    t = threading.Thread(target=collect, args=(tmp_path, stop, got, 0.05))
    t.start()
    time.sleep(0.3)
    for i in range(1, 4):  # enough for a rotation: the follower catches up
        w.submit(rec(i))
    wait(lambda: len(got) >= 11)
    stop.set()
    t.join(5)
    w.close()
    assert calls and got == [f"e{i}" for i in range(1, 12)]
