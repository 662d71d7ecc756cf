"""The hash chain that makes edits, deletions and reordering of log records detectable.

Each record carries `log.prev_hash` (the previous record's hash; 64 zeros for the first record
ever) and `log.hash` = sha256(prev_hash as ASCII + canonical bytes of the record without
`log.hash`). Canonical bytes are orjson's compact encoding with sorted keys; records are also
written in that form, so `clearwall logs verify` recomputes the hash from the parsed line.
"""

from __future__ import annotations

import hashlib

import orjson

GENESIS = "0" * 64

_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical(record: dict) -> bytes:
    """Canonical encoding of a record: compact JSON, keys sorted, UTF-8."""
    return orjson.dumps(record, option=_OPTS)


def record_hash(prev_hash: str, record_without_hash: dict) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(record_without_hash)).hexdigest()


def seal(record: dict, prev_hash: str) -> tuple[bytes, str]:
    """The line (with newline) to write for record, chained to prev_hash, and its hash.

    record is not modified: the log object is replaced in a shallow copy, keeping any other
    `log.*` fields the caller set.
    """
    log = dict(record.get("log") or {}) if isinstance(record.get("log"), dict) else {}
    log.pop("hash", None)
    log["prev_hash"] = prev_hash
    sealed = {**record, "log": log}
    digest = hashlib.sha256(prev_hash.encode("ascii") + canonical(sealed)).hexdigest()
    log["hash"] = digest
    return canonical(sealed) + b"\n", digest


def check(record: dict) -> tuple[str | None, str | None, bool]:
    """(prev_hash, hash, hash_matches) of a parsed record; Nones when the log object is missing."""
    log = record.get("log")
    if not isinstance(log, dict):
        return None, None, False
    prev, digest = log.get("prev_hash"), log.get("hash")
    if not isinstance(prev, str) or not isinstance(digest, str):
        return None, None, False
    unsealed = {**record, "log": {k: v for k, v in log.items() if k != "hash"}}
    try:
        expected = record_hash(prev, unsealed)
    except (UnicodeEncodeError, TypeError, orjson.JSONEncodeError):
        return prev, digest, False
    return prev, digest, expected == digest
