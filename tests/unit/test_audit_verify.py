"""Hash-chain verification: every kind of tampering is found and named by file:line."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from clearwall.audit.chain import GENESIS, check, seal
from clearwall.audit.files import LIVE, rotated_files
from clearwall.audit.verify import verify
from clearwall.audit.writer import LogWriter


def rec(i: int) -> dict:
    return {"@timestamp": "2026-11-22T06:00:00.000Z", "event": {"id": f"e{i}", "action": "allowed"},
            "http": {"request": {"body": {"content": f"body {i} é"}}}}


def write_log(log_dir: Path, n: int, rotate_bytes: int | None = None, start: int = 0) -> None:
    w = LogWriter(log_dir, rotate_bytes=rotate_bytes)
    w.start()
    for i in range(start, start + n):
        w.submit(rec(i))
    w.close()


def live_lines(log_dir: Path) -> list[bytes]:
    return (log_dir / LIVE).read_bytes().splitlines(keepends=True)


def set_live(log_dir: Path, lines: list[bytes]) -> None:
    (log_dir / LIVE).write_bytes(b"".join(lines))


def edit(line: bytes, old: bytes, new: bytes) -> bytes:
    assert old in line
    return line.replace(old, new)


def test_an_untouched_log_verifies(tmp_path):
    write_log(tmp_path, 10)
    result = verify(tmp_path)
    assert result.ok and result.records == 10 and result.start == "genesis"
    assert result.head == orjson.loads(live_lines(tmp_path)[-1])["log"]["hash"]


def test_an_empty_log_verifies(tmp_path):
    result = verify(tmp_path)
    assert result.ok and result.start == "empty" and result.head == GENESIS


def _tamper_edit(lines):
    lines[3] = edit(lines[3], b"body 3", b"body X")
    return lines, 4, "e3", "edited"


def _tamper_edit_hash_too(lines):
    # Recomputing the record's own hash does not help: the next record no longer chains.
    record = orjson.loads(lines[3])
    record["http"]["request"]["body"]["content"] = "forged"
    del record["log"]["hash"]
    line, _ = seal(record, record["log"]["prev_hash"])
    lines[3] = line
    return lines, 5, "e4", "deleted, inserted or reordered"


def _tamper_delete(lines):
    del lines[5]
    return lines, 6, "e6", "deleted, inserted or reordered"


def _tamper_delete_first(lines):
    del lines[0]
    return lines, 1, "e1", "genesis"


def _tamper_reorder(lines):
    lines[2], lines[3] = lines[3], lines[2]
    return lines, 3, "e3", "deleted, inserted or reordered"


def _tamper_truncate(lines):
    lines[-1] = lines[-1][:40]
    return lines, 10, None, "last line of the log is truncated"


def _tamper_garbage(lines):
    lines.insert(4, b"not json\n")
    return lines, 5, None, "not valid JSON"


def _tamper_insert_unhashed(lines):
    lines.insert(4, orjson.dumps(rec(99)) + b"\n")
    return lines, 5, "e99", "no log.hash"


def _tamper_drop_hash_field(lines):
    lines[6] = edit(lines[6], b'"hash":"', b'"hush":"')
    return lines, 7, "e6", "no log.hash"


@pytest.mark.parametrize(
    "tamper",
    [_tamper_edit, _tamper_edit_hash_too, _tamper_delete, _tamper_delete_first, _tamper_reorder,
     _tamper_truncate, _tamper_garbage, _tamper_insert_unhashed, _tamper_drop_hash_field],
    ids=lambda f: f.__name__[len("_tamper_"):].replace("_", " "),
)
def test_tampering_in_the_live_file_is_named(tmp_path, tamper):
    write_log(tmp_path, 10)
    lines, line_no, event_id, problem = tamper(live_lines(tmp_path))
    set_live(tmp_path, lines)
    result = verify(tmp_path)
    assert not result.ok
    first = result.breaks[0]
    assert (first.path.name, first.line, first.event_id) == (LIVE, line_no, event_id)
    assert problem in first.problem
    assert f"flows.jsonl:{line_no}" in str(first)


def test_only_the_tampered_record_breaks_when_the_rest_chains(tmp_path):
    write_log(tmp_path, 10)
    lines = live_lines(tmp_path)
    lines[3] = edit(lines[3], b"body 3", b"body X")
    set_live(tmp_path, lines)
    assert [b.line for b in verify(tmp_path).breaks] == [4]


def _rewrite_gz(path: Path, fn) -> None:
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    path.write_bytes(gzip.compress(b"".join(fn(lines))))


def test_an_edit_inside_a_rotated_archive_is_named(tmp_path):
    write_log(tmp_path, 30, rotate_bytes=1500)
    archives = rotated_files(tmp_path)
    assert len(archives) >= 3 and archives[1].compressed
    _rewrite_gz(archives[1].path, lambda ls: [ls[0].replace(b"body", b"bodY")] + ls[1:])
    first = verify(tmp_path).breaks[0]
    assert first.path == archives[1].path and first.line == 1 and "edited" in first.problem


def test_a_deleted_rotated_file_is_found_at_the_next_file(tmp_path):
    write_log(tmp_path, 30, rotate_bytes=1500)
    archives = rotated_files(tmp_path)
    archives[1].path.unlink()
    first = verify(tmp_path).breaks[0]
    assert first.path == archives[2].path and first.line == 1
    assert "deleted" in first.problem


def test_records_swapped_between_files_are_found(tmp_path):
    write_log(tmp_path, 30, rotate_bytes=1500)
    archives = rotated_files(tmp_path)
    first_of_second = gzip.decompress(archives[1].path.read_bytes()).splitlines(keepends=True)[0]
    last_of_first = gzip.decompress(archives[0].path.read_bytes()).splitlines(keepends=True)[-1]
    _rewrite_gz(archives[0].path, lambda ls: ls[:-1] + [first_of_second])
    _rewrite_gz(archives[1].path, lambda ls: [last_of_first] + ls[1:])
    first = verify(tmp_path).breaks[0]
    assert first.path == archives[0].path and "reordered" in first.problem


def test_the_chain_spans_rotations_and_restarts(tmp_path):
    write_log(tmp_path, 12, rotate_bytes=1500)
    write_log(tmp_path, 12, rotate_bytes=1500, start=12)
    result = verify(tmp_path)
    assert result.ok and result.records == 24 and result.files > 3


def test_a_restart_after_tampering_does_not_hide_it(tmp_path):
    write_log(tmp_path, 5)
    lines = live_lines(tmp_path)
    lines[1] = edit(lines[1], b"body 1", b"body Z")
    set_live(tmp_path, lines)
    write_log(tmp_path, 5, start=5)
    assert [b.line for b in verify(tmp_path).breaks] == [2]


def test_a_forged_retention_note_does_not_anchor_the_chain(tmp_path):
    write_log(tmp_path, 3)
    (tmp_path / "retention.jsonl").write_bytes(b'{"deleted":"x","last_hash":"' + b"ab" * 32 + b'"}\n')
    result = verify(tmp_path)
    assert not result.ok and "deleted by retention" in result.breaks[0].problem


@pytest.mark.parametrize(
    "record",
    [
        {"event": {"id": "x"}, "n": 1.5, "u": "é😀", "z": None, "t": True},
        {"b": [1, {"c": [2, 3]}], "a": {"y": 1, "x": 2}},
    ],
)
def test_a_sealed_record_checks_after_a_round_trip(record):
    line, digest = seal(record, GENESIS)
    prev, got, ok = check(orjson.loads(line))
    assert (prev, got, ok) == (GENESIS, digest, True)
    assert "log" not in record  # the caller's dict is not modified


@pytest.mark.parametrize(
    "record",
    [
        {"event": {"id": "plain"}},
        {"event": {"id": "with other log fields"}, "log": {"level": "info"}},
        {"event": {"id": "stale hash"}, "log": {"hash": "f" * 64}},
        {"event": {"id": "nested log key"}, "extra": {"log": {"prev_hash": GENESIS}}},
    ],
    ids=lambda r: r["event"]["id"],
)
def test_a_sealed_line_is_the_plain_encoding_with_log_last(record):
    line, digest = seal(record, GENESIS)
    parsed = orjson.loads(line)
    assert line == orjson.dumps(parsed) + b"\n"
    assert list(parsed)[-1] == "log" and list(parsed["log"])[-2:] == ["prev_hash", "hash"]
    assert check(parsed) == (GENESIS, digest, True)


@pytest.mark.parametrize(
    "name, record, keys",
    [
        ("an empty record", {}, ["log"]),
        ("non-string keys are written as strings", {"event": {"id": "k"}, 5: {None: 1}}, ["event", "5", "log"]),
    ],
)
def test_unusual_records_seal_like_any_other(name, record, keys):
    line, digest = seal(record, GENESIS)
    parsed = orjson.loads(line)
    assert list(parsed) == keys
    assert line == orjson.dumps(parsed) + b"\n"
    assert check(parsed) == (GENESIS, digest, True)


def test_expect_head_detects_records_deleted_from_the_end(tmp_path):
    write_log(tmp_path, 6)
    lines = live_lines(tmp_path)
    head = orjson.loads(lines[-1])["log"]["hash"]
    assert verify(tmp_path, expect_head=head).ok
    assert verify(tmp_path, expect_head=orjson.loads(lines[2])["log"]["hash"]).ok  # an older head is in the chain
    set_live(tmp_path, lines[:-2])  # the chain alone cannot see this
    assert verify(tmp_path).ok
    result = verify(tmp_path, expect_head=head)
    assert not result.ok and "deleted from the end" in result.breaks[0].problem


def test_the_writer_reports_its_head_at_close(tmp_path, caplog):
    caplog.set_level("INFO", logger="clearwall.audit.writer")
    write_log(tmp_path, 3)
    head = orjson.loads(live_lines(tmp_path)[-1])["log"]["hash"]
    assert f"head hash {head}" in caplog.text


def test_a_damaged_archive_is_a_break_not_a_crash(tmp_path):
    write_log(tmp_path, 30, rotate_bytes=1500)
    archive = rotated_files(tmp_path)[1].path
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])  # cut short
    result = verify(tmp_path)
    assert not result.ok
    assert any(b.path == archive and "cannot read the file" in b.problem for b in result.breaks)


def test_verify_while_the_writer_rotates_is_not_a_false_alarm(tmp_path):
    import threading

    w = LogWriter(tmp_path, rotate_bytes=3000, fsync="never")
    w.start()
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            try:
                w.submit(rec(i))
            except Exception:
                pass
            i += 1
            if i % 20 == 0:
                stop.wait(0.002)

    t = threading.Thread(target=produce)
    t.start()
    try:
        results = [verify(tmp_path, attempts=5) for _ in range(5)]
    finally:
        stop.set()
        t.join()
        w.close()
    assert all(r.ok for r in results), [str(b) for r in results for b in r.breaks]
    assert w.rotations > 0 and verify(tmp_path).ok


def _stdlib_verify(log_dir: Path) -> int:
    """An auditor's verifier using only the standard library (see docs/AUDIT-LOG.md)."""
    import hashlib
    import json

    prev, n = GENESIS, 0
    for path in [f.path for f in rotated_files(log_dir)] + [log_dir / LIVE]:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            for line in f:
                record = json.loads(line)
                digest = record["log"].pop("hash")
                unsealed = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
                assert record["log"]["prev_hash"] == prev
                assert hashlib.sha256(prev.encode() + unsealed).hexdigest() == digest
                prev, n = digest, n + 1
    return n


def test_the_chain_verifies_with_the_standard_library_alone(tmp_path):
    w = LogWriter(tmp_path, rotate_bytes=1500)
    w.start()
    for i in range(20):
        w.submit({**rec(i), "text": "é😀\u2028\x1f\"\\/", "n": [1.5, -0.0, 12345678901234567, None, True]})
    w.close()
    assert _stdlib_verify(tmp_path) == 20


def _documented_verifier() -> str:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "AUDIT-LOG.md").read_text()
    return doc.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_documented_stdlib_verifier_accepts_a_log_with_a_rotation_not_yet_compressed(tmp_path):
    w = LogWriter(tmp_path, rotate_bytes=1500)
    w.start()
    for i in range(20):
        w.submit(rec(i))
    w.close()
    gz = sorted(tmp_path.glob("flows-*.jsonl.gz"))[0]
    (tmp_path / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))  # both forms
    gz.unlink()  # and one only plain, as if compression had not run yet
    code = _documented_verifier().replace('pathlib.Path("logs")', f"pathlib.Path({str(tmp_path)!r})")
    exec(code, {})  # raises AssertionError on a broken chain
    live = tmp_path / LIVE
    live.write_bytes(live.read_bytes().replace(b"e19", b"e99"))
    with pytest.raises(AssertionError):
        exec(code, {})
