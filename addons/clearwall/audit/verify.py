"""Verification of the hash chain over every file of a log directory, oldest first.

The first record must chain to the genesis hash (64 zeros) or, once retention has deleted
older files, to the last hash of the newest deleted file as noted in retention.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from clearwall.audit import chain
from clearwall.audit.files import all_files, iter_lines
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


def _problem_for_prev(expected: str, first: bool, anchor: str | None) -> str:
    if first:
        if anchor:
            return "the first record does not chain to the last hash of the files deleted by retention: records before it were deleted"
        return "the first record does not chain to the genesis hash: records before it were deleted"
    return "log.prev_hash does not match the previous record's hash: a record was deleted, inserted or reordered before this one"


def verify(log_dir: Path) -> Result:
    log_dir = Path(log_dir)
    result = Result()
    anchor = last_deleted_hash(log_dir)
    expected = anchor or chain.GENESIS
    result.start = "retention" if anchor else "genesis"
    files = all_files(log_dir)
    result.files = len(files)
    first = True

    def broken(path, n, record, problem):
        event_id = None
        if isinstance(record, dict) and isinstance(record.get("event"), dict):
            event_id = record["event"].get("id")
        if len(result.breaks) < MAX_BREAKS:
            result.breaks.append(Break(path, n, event_id, problem))

    for i, f in enumerate(files):
        last_file = i == len(files) - 1
        try:
            lines = iter_lines(f.path)
            n = 0
            for n, raw in enumerate(lines, 1):
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
                    broken(f.path, n, record, _problem_for_prev(expected, first, anchor))
                first = False
                expected = digest
        except (OSError, EOFError) as e:
            broken(f.path, 0, None, f"cannot read the file: {e}")
    if result.records == 0:
        result.start = "empty"
    result.head = expected
    return result
