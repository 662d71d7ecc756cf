"""Rotation by size and by UTC day, compression, retention, all with an injected clock."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import orjson
import pytest

from clearwall.audit.files import all_files, parse_rotated, rotated_files, rotated_name
from clearwall.audit.reader import iter_records
from clearwall.audit.retention import NOTES
from clearwall.audit.rotation import compress
from clearwall.audit.verify import verify
from clearwall.audit.writer import LogWriter

DAY = 86400.0
NOON = 1_795_000_000 - (1_795_000_000 % DAY) + DAY / 2  # 12:00 UTC on some day


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def rec(i: int, size: int = 0) -> dict:
    return {"@timestamp": "2026-11-22T06:00:00.000Z", "event": {"id": f"e{i}"}, "pad": "x" * size}


def wait_written(w: LogWriter, n: int) -> None:
    end = time.monotonic() + 5
    while w.records_written < n and time.monotonic() < end:
        time.sleep(0.005)
    assert w.records_written == n


def ids(log_dir: Path) -> list[str]:
    return [loc.record["event"]["id"] for loc in iter_records(log_dir)]


@pytest.mark.parametrize(
    "rotate_bytes, records, expect_files",
    [
        (None, 40, 1),          # never by size
        (10_000_000, 40, 1),    # under the limit
        (2_000, 40, None),      # many files, each under the limit
    ],
)
def test_rotation_by_size(tmp_path, rotate_bytes, records, expect_files):
    w = LogWriter(tmp_path, rotate_bytes=rotate_bytes)
    w.start()
    for i in range(records):
        w.submit(rec(i, 300))
    w.close()
    files = all_files(tmp_path)
    if expect_files:
        assert len(files) == expect_files
    else:
        assert len(files) > 5
        assert all(f.compressed for f in files[:-1])  # close() waits for compression
        for f in files:
            size = len(gzip.decompress(f.path.read_bytes())) if f.compressed else f.path.stat().st_size
            assert 0 < size <= rotate_bytes
    assert ids(tmp_path) == [f"e{i}" for i in range(records)]
    assert verify(tmp_path).ok


def test_rotation_boundary_is_exact(tmp_path):
    w = LogWriter(tmp_path, rotate_bytes=10_000_000)
    w.start()
    w.submit(rec(0))
    w.close()
    line_len = (tmp_path / "flows.jsonl").stat().st_size
    (tmp_path / "flows.jsonl").unlink()
    # Two lines fit exactly at 2*len; one more byte short and the second line rotates.
    for limit, files in [(2 * line_len, 1), (2 * line_len - 1, 2)]:
        d = tmp_path / str(limit)
        w = LogWriter(d, rotate_bytes=limit)
        w.start()
        w.submit(rec(0))
        w.submit(rec(1))
        w.close()
        assert len(all_files(d)) == files, limit


def test_rotation_by_utc_day(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, rotate_bytes=None)
    w.start()
    w.submit(rec(0))
    wait_written(w, 1)
    clock.t = NOON + 11 * 3600 + 59 * 60  # 23:59, same day
    w.submit(rec(1))
    wait_written(w, 2)
    assert len(all_files(tmp_path)) == 1
    clock.t = NOON + 12 * 3600 + 1  # 00:00:01 the next day
    w.submit(rec(2))
    w.close()
    files = all_files(tmp_path)
    assert len(files) == 2
    assert files[0].path.name == rotated_name(NOON + 12 * 3600 + 1, gz=True)
    assert ids(tmp_path) == ["e0", "e1", "e2"]
    with gzip.open(files[0].path) as f:
        assert [orjson.loads(x)["event"]["id"] for x in f] == ["e0", "e1"]
    assert verify(tmp_path).ok


def test_an_idle_writer_rotates_when_the_day_changes(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, fsync_interval=0.02)
    w.start()
    w.submit(rec(0))
    wait_written(w, 1)
    clock.t = NOON + DAY
    end = time.monotonic() + 5
    while w.rotations == 0 and time.monotonic() < end:
        time.sleep(0.01)
    w.close()
    assert w.rotations == 1
    assert not (tmp_path / "flows.jsonl").stat().st_size


def test_restart_on_a_later_day_rotates_the_old_live_file(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock)
    w.start()
    w.submit({**rec(0), "@timestamp": "2026-11-22T12:00:00.000Z"})
    w.close()
    clock.t = NOON + 3 * DAY
    w = LogWriter(tmp_path, clock=clock)
    w.start()
    w.submit(rec(1))
    w.close()
    assert len(rotated_files(tmp_path)) == 1
    assert ids(tmp_path) == ["e0", "e1"]
    assert verify(tmp_path).ok


def test_retention_deletes_old_files_and_keeps_the_chain_verifiable(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, retention_seconds=2 * DAY, rotate_bytes=None)
    w.start()
    for day in range(5):
        clock.t = NOON + day * DAY
        w.submit(rec(day))
        wait_written(w, day + 1)
    w.close()
    # Rotated at noon of days 1..4 (holding e0..e3). On day 4 the cut-off is day 2 noon:
    # the file rotated before it goes, the one rotated exactly at it stays.
    remaining = [parse_rotated(f.path.name)[0] for f in rotated_files(tmp_path)]
    assert remaining == [NOON + 2 * DAY, NOON + 3 * DAY, NOON + 4 * DAY]
    assert ids(tmp_path) == ["e1", "e2", "e3", "e4"]
    notes = [orjson.loads(x) for x in (tmp_path / NOTES).read_bytes().splitlines()]
    assert len(notes) == 1 and notes[0]["last_hash"]
    result = verify(tmp_path)
    assert result.ok and result.start == "retention"


def test_no_retention_keeps_everything(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, retention_seconds=None)
    w.start()
    for day in range(4):
        clock.t = NOON + day * 400 * DAY
        w.submit(rec(day))
        wait_written(w, day + 1)
    w.close()
    assert ids(tmp_path) == ["e0", "e1", "e2", "e3"]


def test_an_interrupted_compression_is_finished_at_start(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock)
    w.start()
    w.submit(rec(0))
    w.close()
    plain = tmp_path / rotated_name(NOON)
    os.rename(tmp_path / "flows.jsonl", plain)  # rotated, then the process died
    (tmp_path / (plain.name + ".gz.tmp")).write_bytes(b"half an archive")
    w = LogWriter(tmp_path, clock=clock)
    w.start()
    w.submit(rec(1))
    w.close()
    names = sorted(os.listdir(tmp_path))
    assert names == [plain.name + ".gz", "flows.jsonl"]
    assert ids(tmp_path) == ["e0", "e1"]
    assert verify(tmp_path).ok


def test_readers_prefer_the_archive_while_both_forms_exist(tmp_path):
    plain = tmp_path / rotated_name(NOON)
    plain.write_bytes(orjson.dumps(rec(0)) + b"\n")
    archive = tmp_path / (plain.name + ".gz")
    archive.write_bytes(gzip.compress(plain.read_bytes()))
    files = rotated_files(tmp_path)
    assert [f.path for f in files] == [archive]
    compress_again = tmp_path / rotated_name(NOON + 1)
    compress_again.write_bytes(b"x\n")
    assert compress(compress_again).read_bytes()[:2] == b"\x1f\x8b"
    assert not compress_again.exists()


def test_rotated_names_sort_in_time_order():
    names = [rotated_name(NOON + 1), rotated_name(NOON, 2), rotated_name(NOON), rotated_name(NOON, 10)]
    parsed = sorted((parse_rotated(n), n) for n in names)
    assert [n for _, n in parsed] == [rotated_name(NOON), rotated_name(NOON, 2), rotated_name(NOON, 10), rotated_name(NOON + 1)]
    assert parse_rotated("flows.jsonl") is None
    assert parse_rotated("other-20261122T000000.000000Z.jsonl") is None


def test_rotation_names_keep_time_order_when_the_clock_steps_back(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, rotate_bytes=400)
    w.start()
    for i, t in enumerate([NOON, NOON, NOON - 3600, NOON - 7200, NOON + 5]):
        clock.t = t
        w.submit(rec(i))
        wait_written(w, i + 1)
    w.close()
    assert ids(tmp_path) == ["e0", "e1", "e2", "e3", "e4"]
    assert verify(tmp_path).ok
    names = [f.path.name for f in rotated_files(tmp_path)]
    assert len(names) == 4 and len(set(names)) == 4


def test_restart_with_an_empty_live_file_continues_from_the_newest_archive(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, fsync_interval=0.02)
    w.start()
    w.submit(rec(0))
    wait_written(w, 1)
    clock.t = NOON + DAY  # the idle writer rotates: the live file is left empty
    end = time.monotonic() + 5
    while w.rotations == 0 and time.monotonic() < end:
        time.sleep(0.01)
    w.close()
    assert (tmp_path / "flows.jsonl").stat().st_size == 0
    w = LogWriter(tmp_path, clock=clock)
    w.start()
    w.submit(rec(1))
    w.close()
    assert ids(tmp_path) == ["e0", "e1"]
    assert verify(tmp_path).ok


def test_restart_after_retention_deleted_every_file_continues_the_chain(tmp_path):
    clock = Clock(NOON)
    w = LogWriter(tmp_path, clock=clock, retention_seconds=DAY, fsync_interval=0.02)
    w.start()
    w.submit(rec(0))
    wait_written(w, 1)
    clock.t = NOON + DAY  # idle rotation at the day change leaves the live file empty
    end = time.monotonic() + 5
    while w.rotations == 0 and time.monotonic() < end:
        time.sleep(0.01)
    w.close()
    clock.t = NOON + 10 * DAY
    w = LogWriter(tmp_path, clock=clock, retention_seconds=DAY)
    w.start()  # retention removes the only archive
    end = time.monotonic() + 5
    while rotated_files(tmp_path) and time.monotonic() < end:
        time.sleep(0.01)
    w.close()
    w = LogWriter(tmp_path, clock=clock, retention_seconds=DAY)
    w.start()
    w.submit(rec(1))
    w.close()
    assert ids(tmp_path) == ["e1"]
    result = verify(tmp_path)
    assert result.ok and result.start == "retention"


@pytest.mark.parametrize("nice", [0, 5, 19])
def test_housekeeping_runs_at_a_lower_priority(tmp_path, nice):
    from clearwall.audit.rotation import Housekeeper

    base = os.getpriority(os.PRIO_PROCESS, 0)  # this thread's nice value
    house = Housekeeper(tmp_path, None, nice=nice)
    house.start()
    plain = tmp_path / "flows-x.jsonl"
    plain.write_bytes(b"{}\n")
    house.compress_later(plain)
    end = time.monotonic() + 5
    while not (tmp_path / "flows-x.jsonl.gz").exists() and time.monotonic() < end:
        time.sleep(0.005)
    try:
        # The job ran, so the thread has already set its priority.
        assert os.getpriority(os.PRIO_PROCESS, house._thread.native_id) == min(19, base + nice)
    finally:
        assert house.close(5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the caller's priority is untouched


@pytest.mark.parametrize("nice", [-1, 20])
def test_a_housekeeping_priority_out_of_range_is_refused(tmp_path, nice):
    from clearwall.audit.rotation import Housekeeper

    with pytest.raises(ValueError, match="nice"):
        Housekeeper(tmp_path, None, nice=nice)
    with pytest.raises(ValueError, match="housekeeping_nice"):
        LogWriter(tmp_path, housekeeping_nice=nice)
