"""Names and order of the files in a log directory, and streaming access to their lines.

LOG_DIR/flows.jsonl is the live file. Rotation renames it to flows-<UTC time>.jsonl and a
helper thread compresses that to flows-<UTC time>.jsonl.gz; a reader takes the .gz when both
exist (the plain one is removed right after the .gz is complete).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

LIVE = "flows.jsonl"
_ROTATED = re.compile(r"^flows-(\d{8}T\d{6}\.\d{6}Z)(?:-(\d+))?\.jsonl(\.gz)?$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True, order=True)
class LogFile:
    """One file of the log, ordered by (rotation time, sequence); the live file sorts last."""

    rotated_at: float
    seq: int
    path: Path

    @property
    def live(self) -> bool:
        return self.path.name == LIVE

    @property
    def compressed(self) -> bool:
        return self.path.suffix == ".gz"


def stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(_STAMP)


def rotated_name(epoch: float, seq: int = 0, *, gz: bool = False) -> str:
    suffix = f"-{seq}" if seq else ""
    return f"flows-{stamp(epoch)}{suffix}.jsonl" + (".gz" if gz else "")


def next_rotated_name(log_dir: Path, now: float) -> str:
    """The name for a rotation at `now` that sorts after every existing rotated file, even
    when the clock stepped back or two rotations share a microsecond (a sequence suffix)."""
    files = rotated_files(log_dir)
    if files:
        newest = files[-1]
        stamp_now = parse_rotated(rotated_name(now))[0]
        if newest.rotated_at >= stamp_now:
            m = _ROTATED.match(newest.path.name)
            return f"flows-{m.group(1)}-{newest.seq + 1}.jsonl"
    return rotated_name(now)


def parse_rotated(name: str) -> tuple[float, int, bool] | None:
    """(rotation epoch, sequence, compressed) of a rotated file name, None for other names."""
    m = _ROTATED.match(name)
    if not m:
        return None
    try:
        dt = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=timezone.utc)
    except ValueError:  # shaped like a rotation but no real time (a stray file): not ours
        return None
    return dt.timestamp(), int(m.group(2) or 0), bool(m.group(3))


def rotated_files(log_dir: Path) -> list[LogFile]:
    """Rotated files in time order, the .gz one when a rotation exists in both forms."""
    chosen: dict[tuple[float, int], LogFile] = {}
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    for name in names:
        parsed = parse_rotated(name)
        if parsed is None:
            continue
        at, seq, gz = parsed
        have = chosen.get((at, seq))
        if have is None or (gz and not have.compressed):
            chosen[(at, seq)] = LogFile(at, seq, log_dir / name)
    return sorted(chosen.values())


def all_files(log_dir: Path) -> list[LogFile]:
    """Every file of the log in time order: rotated ones, then the live file if present."""
    files = rotated_files(log_dir)
    live = log_dir / LIVE
    if live.exists():
        files.append(LogFile(float("inf"), 0, live))
    return files


def open_lines(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: Path) -> Iterator[bytes]:
    """Lines of one file as bytes, newline kept (a missing one marks a truncated last line)."""
    with open_lines(path) as f:
        yield from f


def read_lines(path: Path) -> Iterator[bytes]:
    """iter_lines for review commands: a file that vanished (expired, or compressed meanwhile)
    or a damaged archive ends early with a warning instead of a traceback."""
    try:
        yield from iter_lines(path)
    except FileNotFoundError:
        gz = path.with_name(path.name + ".gz")
        if path.suffix != ".gz" and gz.exists():
            log.warning("%s was compressed while being read; records after that point are skipped", path)
    except (OSError, EOFError, zlib.error) as e:
        log.warning("cannot read the rest of %s (%s); `clearwall logs verify` reports it", path, e)


def first_line(path: Path) -> bytes | None:
    with open_lines(path) as f:
        line = f.readline()
    return line or None


def last_line(path: Path, chunk: int = 65536) -> bytes | None:
    """The last line of a file (newline kept if present), reading backwards for plain files."""
    if path.suffix == ".gz":
        last = None
        for last in iter_lines(path):  # gzip cannot seek from the end; done once at start-up
            pass
        return last
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        pos, buf = end, b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            # The last line starts after the last newline that is not the final byte.
            nl = buf.rfind(b"\n", 0, len(buf) - 1)
            if nl >= 0:
                return buf[nl + 1 :]
        return buf
