"""retention.jsonl: what retention deleted, so verify can anchor the chain after deletion.

Before a rotated file past retention is removed, its last record's hash is appended here;
the oldest remaining record must chain to the newest such hash.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import orjson

from clearwall.audit.fields import iso_timestamp
from clearwall.audit.files import last_line

NOTES = "retention.jsonl"

log = logging.getLogger(__name__)


def note_and_delete(path: Path, now: float) -> None:
    """Note path's last hash in retention.jsonl (fsynced), then delete path."""
    last_hash = None
    try:
        line = last_line(path)
        last_hash = orjson.loads(line)["log"]["hash"] if line else None
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, KeyError, TypeError) as e:
        # Retention still applies; verify will report the chain start it cannot anchor.
        log.warning("%s: no readable last hash before deletion (%s)", path, e)
    note = {"@timestamp": iso_timestamp(now), "deleted": path.name, "last_hash": last_hash}
    notes = path.parent / NOTES
    fd = os.open(notes, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, orjson.dumps(note) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)


def last_deleted_hash(log_dir: Path) -> str | None:
    """The newest last_hash noted in retention.jsonl, None when nothing was deleted."""
    notes = Path(log_dir) / NOTES
    if not notes.exists():
        return None
    newest = None
    with open(notes, "rb") as f:
        for raw in f:
            try:
                h = orjson.loads(raw).get("last_hash")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(h, str):
                newest = h
    return newest
