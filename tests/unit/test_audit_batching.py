"""The writer's batch queue, and sealed lines written every write_bytes within a batch."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from clearwall.audit.batchqueue import BatchQueue, Full, Heavy
from clearwall.audit.chain import seal
from clearwall.audit.sink import FileSink
from clearwall.audit.verify import verify
from clearwall.audit.writer import LogWriter


@pytest.mark.parametrize(
    "name, maxsize, puts, accepted",
    [
        ("a queue takes items up to its size", 3, 3, 3),
        ("one more than its size is refused", 3, 4, 3),
        ("a queue of one", 1, 2, 1),
    ],
)
def test_the_queue_is_bounded(name, maxsize, puts, accepted):
    q = BatchQueue(maxsize)
    taken = 0
    for i in range(puts):
        try:
            q.put_nowait(i)
            taken += 1
        except Full:
            pass
    assert taken == accepted and q.qsize() == accepted


def test_a_forced_item_gets_in_behind_a_full_queue():
    q = BatchQueue(2, max_weight=10)
    q.put_nowait("a", 10)
    q.put_nowait("stop", force=True)
    q.put_nowait("heavy", 5, force=True)
    assert q.get_batch(10, 0) == ["a", "stop", "heavy"]
    assert q.weight == 0


@pytest.mark.parametrize(
    "name, max_weight, weights, accepted",
    [
        ("weights up to the limit fit", 30, [10, 10, 10], 3),
        ("one unit over the limit is refused", 29, [10, 10, 10], 2),
        ("one item heavier than the limit gets into an empty queue", 5, [100], 1),
        ("but nothing after it", 5, [100, 1], 1),
        ("weightless items fit in a queue at its limit", 20, [10, 10, 0, 0], 4),
        ("no limit", None, [10**9, 10**9], 2),
    ],
)
def test_the_queue_is_bounded_in_weight(name, max_weight, weights, accepted):
    q = BatchQueue(100, max_weight=max_weight)
    taken = 0
    for i, weight in enumerate(weights):
        try:
            q.put_nowait(i, weight)
            taken += 1
        except Heavy:
            pass
    assert taken == accepted
    assert q.weight == sum(weights[:accepted])


@pytest.mark.parametrize(
    "name, max_items, left",
    [
        ("taking everything takes all the weight", 10, 0),
        ("taking some leaves the weight of the rest", 2, 3 + 4),
    ],
)
def test_taking_items_takes_their_weight(name, max_items, left):
    q = BatchQueue(10, max_weight=100)
    for i, weight in enumerate([1, 2, 3, 4]):
        q.put_nowait(i, weight)
    q.get_batch(max_items, 0)
    assert q.weight == left


@pytest.mark.parametrize(
    "name, queued, max_items, batches",
    [
        ("fewer than the batch size come in one batch", 3, 5, [[0, 1, 2]]),
        ("exactly the batch size is one batch", 5, 5, [[0, 1, 2, 3, 4]]),
        ("one more than the batch size is two batches", 6, 5, [[0, 1, 2, 3, 4], [5]]),
        ("batches of one", 3, 1, [[0], [1], [2]]),
    ],
)
def test_batches_keep_fifo_order(name, queued, max_items, batches):
    q = BatchQueue(100)
    for i in range(queued):
        q.put_nowait(i)
    got = []
    while True:
        batch = q.get_batch(max_items, 0)
        if not batch:
            break
        got.append(batch)
    assert got == batches


def test_an_empty_queue_returns_nothing_after_its_timeout():
    q = BatchQueue(1)
    t = time.monotonic()
    assert q.get_batch(10, 0.05) == []
    assert 0.04 <= time.monotonic() - t < 1.0


def test_a_waiting_consumer_wakes_for_the_first_item():
    q = BatchQueue(10)
    got = []
    consumer = threading.Thread(target=lambda: got.append(q.get_batch(10, 5)))
    consumer.start()
    time.sleep(0.05)
    t = time.monotonic()
    q.put_nowait("x")
    consumer.join(5)
    assert got == [["x"]] and time.monotonic() - t < 1.0


def test_many_producers_lose_and_duplicate_nothing():
    q = BatchQueue(100_000)
    producers = [threading.Thread(target=lambda k=k: [q.put_nowait((k, i)) for i in range(2000)]) for k in range(4)]
    for p in producers:
        p.start()
    got = []
    while len(got) < 8000:
        got += q.get_batch(64, 5)
    for p in producers:
        p.join()
    assert sorted(got) == sorted((k, i) for k in range(4) for i in range(2000))
    for k in range(4):  # each producer's items stay in its order
        assert [i for kk, i in got if kk == k] == list(range(2000))


def test_a_bad_size_is_refused():
    with pytest.raises(ValueError, match="maxsize"):
        BatchQueue(0)
    with pytest.raises(ValueError, match="max_weight"):
        BatchQueue(1, max_weight=0)


class RecordingSink(FileSink):
    """A real file that notes how many lines each write carried, and holds writes until
    `gate` opens so records pile up into one batch."""

    gate = threading.Event()
    writes: list[int] = []

    def writev(self, buffers):
        self.gate.wait(10)
        RecordingSink.writes.append(sum(bytes(b).count(b"\n") for b in buffers))
        return super().writev(buffers)


def rec(i: int) -> dict:
    return {"@timestamp": "2026-11-22T06:00:00.000Z", "event": {"id": f"e{i:03d}", "action": "allowed"}}


LINE = len(seal(rec(0), "0" * 64)[0])  # every rec(i) line has this length


@pytest.mark.parametrize(
    "name, write_bytes, writes",
    [
        ("a budget of one line writes each line as it is sealed", LINE, [1, 1, 1, 1, 1, 1]),
        ("a budget one byte over two lines writes three at a time", 2 * LINE + 1, [1, 3, 2]),
        ("a budget of exactly two lines writes two at a time", 2 * LINE, [1, 2, 2, 1]),
        ("a large budget writes the batch at once", 1 << 20, [1, 5]),
    ],
)
def test_sealed_lines_are_written_every_write_bytes(tmp_path, name, write_bytes, writes):
    RecordingSink.gate.clear()
    RecordingSink.writes = []
    w = LogWriter(tmp_path, write_bytes=write_bytes, open_sink=RecordingSink, fsync="never")
    w.start()
    try:
        w.submit(rec(0))  # written alone; its write waits on the gate while the rest queue up
        deadline = time.monotonic() + 5
        while w._q.qsize() and time.monotonic() < deadline:
            time.sleep(0.005)
        for i in range(1, 6):
            w.submit(rec(i))
        RecordingSink.gate.set()
    finally:
        w.close()
    assert RecordingSink.writes == writes
    got = [orjson.loads(x)["event"]["id"] for x in (tmp_path / "flows.jsonl").read_bytes().splitlines()]
    assert got == [f"e{i:03d}" for i in range(6)]
    assert verify(tmp_path).ok


@pytest.mark.parametrize("write_bytes, ok", [(0, False), (1, True)])
def test_write_bytes_must_be_positive(tmp_path, write_bytes, ok):
    if ok:
        assert LogWriter(tmp_path, write_bytes=write_bytes).write_bytes == 1
    else:
        with pytest.raises(ValueError, match="write_bytes"):
            LogWriter(tmp_path, write_bytes=write_bytes)
