"""The hash chain that makes edits, deletions and reordering of log records detectable.

Each record carries `log.prev_hash` (the previous record's hash; 64 zeros for the first record
ever) and `log.hash` = sha256(prev_hash as ASCII + the record's line without `log.hash`).
Lines are compact JSON (orjson) with `log` as the last key and `hash` as the last key inside
it, so the unsealed bytes are the sealed line with `,"hash":"…"` cut out: the writer encodes
each record once, and `clearwall logs verify` re-encodes the parsed line (key order is kept)
to recompute the hash.
"""

from __future__ import annotations

import hashlib

import orjson

GENESIS = "0" * 64

_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS


def encode(record: dict) -> bytes:
    """Compact JSON of a record, keys in insertion order, UTF-8.

    Non-string keys (from `extra`) are written as strings. orjson's option for them slows
    every record by half, so it is used only for the rare record that needs it: its output
    for string keys is the same.
    """
    try:
        return orjson.dumps(record)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return orjson.dumps(record, option=_NON_STR_KEYS)


def seal(record: dict, prev_hash: str) -> tuple[bytes, str]:
    """The line (with newline) to write for record, chained to prev_hash, and its hash.

    record is not modified: `log` goes last, keeping other `log.*` fields.
    """
    if "log" in record:
        return _seal_with_log(record, prev_hash)
    # The common case, without copying the record: compact JSON of a dict ends with "}", so
    # `log` is appended to the encoded bytes exactly where encoding it last would put it.
    encoded = encode(record)
    prev = prev_hash.encode("ascii")
    head = memoryview(encoded)[:-1]
    # "{}" has no member for `log` to follow.
    log = (b',"log":{"prev_hash":"' if len(encoded) > 2 else b'"log":{"prev_hash":"') + prev + b'"'
    h = hashlib.sha256(prev)
    h.update(head)
    h.update(log + b"}}")
    digest = h.hexdigest()
    return b"".join((head, log, b',"hash":"', digest.encode("ascii"), b'"}}\n')), digest


def _seal_with_log(record: dict, prev_hash: str) -> tuple[bytes, str]:
    log = {k: v for k, v in record["log"].items() if k not in ("hash", "prev_hash")} if isinstance(record["log"], dict) else {}
    log["prev_hash"] = prev_hash
    sealed = {k: v for k, v in record.items() if k != "log"}
    sealed["log"] = log
    unsealed = encode(sealed)  # ends with "prev_hash":"<prev>"}}
    digest = hashlib.sha256(prev_hash.encode("ascii") + unsealed).hexdigest()
    line = unsealed[:-2] + b',"hash":"' + digest.encode("ascii") + b'"}}\n'  # log is last
    return line, digest


def check(record: dict) -> tuple[str | None, str | None, bool]:
    """(prev_hash, hash, hash_matches) of a parsed record; Nones when the log object is missing."""
    log = record.get("log")
    if not isinstance(log, dict):
        return None, None, False
    prev, digest = log.get("prev_hash"), log.get("hash")
    if not isinstance(prev, str) or not isinstance(digest, str):
        return None, None, False
    unsealed = dict(record)
    unsealed["log"] = {k: v for k, v in log.items() if k != "hash"}
    try:
        expected = hashlib.sha256(prev.encode("ascii") + encode(unsealed)).hexdigest()
    except (UnicodeEncodeError, TypeError, orjson.JSONEncodeError):
        return prev, digest, False
    return prev, digest, expected == digest
