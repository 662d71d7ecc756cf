"""Streaming reads of a log directory: every record in time order, filtered, or followed.

Files are read line by line (gzip streams for rotated files); nothing loads a whole file.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import orjson

from clearwall.audit.fields import parse_timestamp
from clearwall.audit.files import all_files, read_lines


@dataclass(frozen=True)
class Located:
    """A parsed record and where it is: file path and 1-based line number."""

    record: dict
    path: Path
    line: int


def iter_records(log_dir: Path, *, since: float | None = None) -> Iterator[Located]:
    """Every parseable record of the log, oldest file first. Rotated files rotated before
    `since` are skipped unread (each holds only records written before its rotation)."""
    for f in all_files(Path(log_dir)):
        if since is not None and not f.live and f.rotated_at < since:
            continue
        for n, raw in enumerate(read_lines(f.path), 1):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # verify reports it; review commands show what can be read
            if isinstance(record, dict):
                yield Located(record, f.path, n)


def get(record: dict, dotted: str):
    """record["a"]["b"] for "a.b"; None when any part is missing."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def record_time(record: dict) -> float | None:
    try:
        return parse_timestamp(record["@timestamp"])
    except (KeyError, TypeError, ValueError):
        return None


def _body_texts(record: dict) -> Iterator[str]:
    bodies = [get(record, "http.request.body"), get(record, "http.response.body")]
    for m in get(record, "websocket.messages") or []:
        if isinstance(m, dict):
            bodies.append(m.get("content"))
    for body in bodies:
        if not isinstance(body, dict) or not isinstance(body.get("content"), str):
            continue
        if body.get("encoding") == "base64":
            try:
                yield base64.b64decode(body["content"]).decode("utf-8", "replace")
            except ValueError:
                continue
        else:
            yield body["content"]


def parse_status(text: str) -> Callable[[int | None], bool]:
    """A status test from "403", "4xx", or "500-599"; ValueError for anything else."""
    t = text.strip().lower()
    if re.fullmatch(r"[1-5]xx", t):
        lo = int(t[0]) * 100
        return lambda s: s is not None and lo <= s < lo + 100
    if re.fullmatch(r"\d{3}-\d{3}", t):
        lo, hi = int(t[:3]), int(t[4:])
        return lambda s: s is not None and lo <= s <= hi
    if re.fullmatch(r"\d{3}", t):
        code = int(t)
        return lambda s: s == code
    raise ValueError(f"status must be like 403, 4xx or 500-599, not {text!r}")


@dataclass
class Filter:
    """Record filters; every one given must match. Host and client accept * globs."""

    since: float | None = None
    until: float | None = None
    client: str | None = None
    host: str | None = None
    rule: str | None = None
    action: str | None = None
    status: Callable[[int | None], bool] | None = None
    text: str | None = None
    regex: re.Pattern | None = None

    def matches(self, record: dict) -> bool:
        if self.since is not None or self.until is not None:
            t = record_time(record)
            if t is None or (self.since is not None and t < self.since):
                return False
            if self.until is not None and t >= self.until:
                return False
        if self.client and not self._client(record):
            return False
        if self.host and not _glob(self.host, [get(record, "destination.domain"), get(record, "destination.ip"), get(record, "tls.client.server_name")]):
            return False
        if self.rule and self.rule not in (get(record, "rule.name") or []):
            return False
        if self.action and get(record, "event.action") != self.action:
            return False
        if self.status and not self.status(get(record, "http.response.status_code")):
            return False
        if self.text is not None and not any(self.text in t for t in _body_texts(record)):
            return False
        if self.regex is not None and not any(self.regex.search(t) for t in _body_texts(record)):
            return False
        return True

    def _client(self, record: dict) -> bool:
        return _glob(
            self.client,
            [get(record, "labels.client"), get(record, "client.user.name"), get(record, "client.ip")],
        )


def _glob(pattern: str, values: list) -> bool:
    p = pattern.lower()
    return any(isinstance(v, str) and fnmatch.fnmatchcase(v.lower(), p) for v in values)


def search(log_dir: Path, flt: Filter) -> Iterator[Located]:
    for loc in iter_records(log_dir, since=flt.since):
        if flt.matches(loc.record):
            yield loc
