"""Verification of the hash chain over every file of a log directory, oldest first.

The first record must chain to the genesis hash (64 zeros) or, once retention has deleted
older files, to the last hash of the newest deleted file as noted in retention.jsonl.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from clearwall.audit import chain
from clearwall.audit.files import LIVE, all_files, iter_lines
from clearwall.audit.retention import last_deleted_hash

MAX_BREAKS = 100


@dataclass(frozen=True)
class Break:
    path: Path
    line: int
    event_id: str | None
    problem: str

    def __str__(self) -> str:
        ident = f" (event.id {self.event_id})" if self.event_id else ""
        return f"{self.path}:{self.line}{ident}: {self.problem}"


@dataclass
class Result:
    records: int = 0
    files: int = 0
    start: str = "genesis"  # genesis | retention | empty
    head: str = chain.GENESIS
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "records": self.records,
            "files": self.files,
            "start": self.start,
            "head": self.head,
            "breaks": [
                {"file": str(b.path), "line": b.line, "event_id": b.event_id, "problem": b.problem}
                for b in self.breaks
            ],
        }


def _problem_for_prev(first: bool, anchor: str | None) -> str:
    if first:
        if anchor:
            return "the first record does not chain to the last hash of the files deleted by retention: records before it were deleted"
        return "the first record does not chain to the genesis hash: records before it were deleted"
    return "log.prev_hash does not match the previous record's hash: a record was deleted, inserted or reordered before this one"


def _snapshot(log_dir: Path) -> tuple:
    live = log_dir / LIVE
    try:
        size = live.stat().st_size
    except FileNotFoundError:
        size = -1
    return tuple(sorted(os.listdir(log_dir))), size


def verify(log_dir: Path, *, expect_head: str | None = None, attempts: int = 3) -> Result:
    """Verify the whole chain. When it looks broken while the writer changed the directory
    (a rotation, a line being written), verify again: only a stable break is reported.
    expect_head: a hash known from elsewhere (e.g. Clearwall's own log at shutdown) that must
    be in the chain; this detects records deleted from the end of the log."""
    log_dir = Path(log_dir)
    for _ in range(attempts):
        before = _snapshot(log_dir)
        result = _verify_once(log_dir, expect_head)
        if result.ok or _snapshot(log_dir) == before:
            return result
    return result


def _verify_once(log_dir: Path, expect_head: str | None) -> Result:
    result = Result()
    anchor = last_deleted_hash(log_dir)
    expected = anchor or chain.GENESIS
    result.start = "retention" if anchor else "genesis"
    files = all_files(log_dir)
    result.files = len(files)
    first = True
    head_seen = expect_head is None or expect_head == expected

    def broken(path, n, record, problem):
        event_id = None
        if isinstance(record, dict) and isinstance(record.get("event"), dict):
            event_id = record["event"].get("id")
        if len(result.breaks) < MAX_BREAKS:
            result.breaks.append(Break(path, n, event_id, problem))

    for i, f in enumerate(files):
        last_file = i == len(files) - 1
        n = 0
        try:
            for n, raw in enumerate(iter_lines(f.path), 1):
                result.records += 1
                if not raw.endswith(b"\n"):
                    where = "the last line of the log" if last_file else "the last line of this file"
                    broken(f.path, n, None, f"{where} is truncated (no newline): the record was cut short")
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    broken(f.path, n, None, "not valid JSON: the line was edited or corrupted")
                    continue
                prev, digest, hash_ok = chain.check(record) if isinstance(record, dict) else (None, None, False)
                if digest is None:
                    broken(f.path, n, record, "no log.hash/log.prev_hash: the record was edited or inserted")
                    continue
                if not hash_ok:
                    broken(f.path, n, record, "content does not match log.hash: the record was edited")
                elif prev != expected:
                    broken(f.path, n, record, _problem_for_prev(first, anchor))
                first = False
                expected = digest
                head_seen = head_seen or digest == expect_head
        except (OSError, EOFError, zlib.error) as e:
            broken(f.path, n + 1, None, f"cannot read the file past this line: {e}")
    if result.records == 0:
        result.start = "empty"
    result.head = expected
    if not head_seen:
        last = files[-1].path if files else log_dir / LIVE
        broken(last, result.records, None,
               f"no record has the expected head hash {expect_head}: records were deleted from the end of the log")
    return result
