"""Start-up recovery of a log directory: chain head, interrupted rotations, torn last line."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from clearwall.audit import chain
from clearwall.audit.errors import AuditError
from clearwall.audit.fields import parse_timestamp
from clearwall.audit.files import LIVE, first_line, last_line, parse_rotated, rotated_files, stamp
from clearwall.audit.retention import last_deleted_hash

log = logging.getLogger(__name__)


@dataclass
class State:
    prev_hash: str = chain.GENESIS
    first_time: float | None = None  # @timestamp of the live file's first record
    uncompressed: list[Path] = field(default_factory=list)


def _finish_rotations(log_dir: Path) -> list[Path]:
    """Remove half-written archives; list rotated files still waiting for compression."""
    todo = []
    for name in sorted(os.listdir(log_dir)):
        path = log_dir / name
        if name.endswith(".jsonl.gz.tmp") and parse_rotated(name[: -len(".gz.tmp")]):
            path.unlink()
            continue
        parsed = parse_rotated(name)
        if parsed and not parsed[2]:
            if path.with_name(name + ".gz").exists():
                path.unlink()  # the archive was completed before the crash
            else:
                todo.append(path)
    return todo


def _cut_torn_tail(live: Path) -> None:
    """A crash mid-write leaves a last line without newline; it is moved aside (never
    silently lost) so the chain continues from the last complete record."""
    with open(live, "rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep = end - len(last_line(live) or b"")
        f.seek(keep)
        torn = f.read()
        aside = live.with_name(f"{LIVE}.partial-{stamp(time.time())}")
        aside.write_bytes(torn)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("moved a torn last record (%d bytes) of %s to %s", len(torn), live, aside)


def _hash_of(line: bytes, path: Path) -> str:
    try:
        record = orjson.loads(line)
        digest = record["log"]["hash"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise AuditError(
            f"the last record of {path} has no readable log.hash, so the chain cannot continue; "
            f"run `clearwall logs verify --log-dir {path.parent}` ({e})"
        ) from None
    if not isinstance(digest, str) or len(digest) != 64:
        raise AuditError(f"the last record of {path} has a malformed log.hash {digest!r}")
    return digest


def recover(log_dir: Path) -> State:
    try:
        state = State(uncompressed=_finish_rotations(log_dir))
        live = log_dir / LIVE
        if live.exists() and live.stat().st_size:
            _cut_torn_tail(live)
        if live.exists() and live.stat().st_size:
            state.prev_hash = _hash_of(last_line(live), live)
            try:
                state.first_time = parse_timestamp(orjson.loads(first_line(live))["@timestamp"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                state.first_time = None
            return state
        rotated = rotated_files(log_dir)
        if rotated:
            newest = rotated[-1].path
            line = last_line(newest)
            if line:
                state.prev_hash = _hash_of(line, newest)
                return state
        # Every earlier file was deleted by retention: continue from the last one deleted.
        state.prev_hash = last_deleted_hash(log_dir) or chain.GENESIS
        return state
    except OSError as e:
        raise AuditError(f"cannot read log directory {log_dir}: {e.strerror or e}") from e
