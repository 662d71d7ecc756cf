"""Pure shaping of the parts of a log record: bodies, headers, timestamps, secret scrubbing.

Nothing here does I/O; every function is safe to call from any thread.
"""

from __future__ import annotations

import time
from base64 import b64encode
from datetime import datetime, timezone
from functools import lru_cache
from hashlib import sha256
from typing import Iterable

REDACTED = "[REDACTED]"

# Content types logged as base64 even when their bytes happen to decode as UTF-8. Any other
# body is logged as text when it is valid UTF-8 (most JSON APIs declare no charset).
_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/")
_BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/gzip",
        "application/x-gzip",
        "application/zip",
        "application/zstd",
        "application/pdf",
        "application/x-protobuf",
        "application/protobuf",
        "application/grpc",
    }
)


@lru_cache(maxsize=256)
def is_binary_type(content_type: str | None) -> bool:
    """True when a Content-Type names a binary format, so the body is logged as base64."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in _BINARY_TYPES or mime.startswith(_BINARY_PREFIXES)


def utf8_prefix(data: bytes, max_bytes: int) -> bytes:
    """At most max_bytes of data, cut back so a multi-byte UTF-8 sequence is never split."""
    if len(data) <= max_bytes:
        return data
    cut = max_bytes
    # Walk back over at most 3 continuation bytes (10xxxxxx) to the start of a sequence,
    # then keep the sequence only when it fits whole.
    start = cut
    while start > 0 and start > cut - 4 and (data[start - 1] & 0xC0) == 0x80:
        start -= 1
    if start > 0:
        lead = data[start - 1]
        need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
        if start - 1 + need > cut:
            cut = start - 1
    return data[:cut]


def scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    """data with every occurrence of each secret replaced by [REDACTED]."""
    for secret in secrets:
        if secret:
            raw = secret.encode("utf-8", "surrogateescape")
            if raw in data:
                data = data.replace(raw, REDACTED.encode())
    return data


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """text with every occurrence of each secret replaced by [REDACTED]."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def body_field(
    data: bytes,
    *,
    content_type: str | None,
    max_bytes: int | None,
    secrets: Iterable[str] = (),
) -> dict:
    """SPEC §5 body object: size and sha256 of the whole body, at most max_bytes of content.

    Content is UTF-8 text when the bytes decode as UTF-8 and the type is not a binary one,
    otherwise base64 of the (cut) bytes. max_bytes None means no cap. Secrets are replaced
    in the content only; bytes and sha256 still describe the body that was sent.
    """
    if max_bytes is not None and max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
    digest = sha256(data).hexdigest()
    kept = data
    if secrets:
        secrets = tuple(s for s in secrets if s)
        if secrets:
            # Before the cut, so a secret straddling the cut cannot leave its first half behind.
            kept = scrub_bytes(kept, secrets)
    truncated = max_bytes is not None and len(kept) > max_bytes
    if not (content_type and is_binary_type(content_type)):
        try:
            # One decode decides text versus base64: no separate validity scan.
            text = (utf8_prefix(kept, max_bytes) if truncated else kept).decode("utf-8")
            return {"bytes": len(data), "content": text, "encoding": "utf-8",
                    "truncated": truncated, "sha256": digest}
        except UnicodeDecodeError:
            pass
    cut = kept[:max_bytes] if truncated else kept
    return {"bytes": len(data), "content": b64encode(cut).decode("ascii"), "encoding": "base64",
            "truncated": truncated, "sha256": digest}


def redact_headers(
    headers: Iterable[tuple[str, str]],
    names: Iterable[str],
    secrets: Iterable[str] = (),
) -> dict[str, list[str] | str]:
    """Headers as an ECS-style mapping: lower-cased names, a list when a name repeats.

    Values of headers named in `names` (case-insensitive), and of any header whose value
    contains one of `secrets` (injected credentials), become [REDACTED].
    """
    redact = _lowered(names) if type(names) is frozenset else {n.lower() for n in names}
    secrets = tuple(s for s in secrets if s) if secrets else ()
    out: dict[str, list[str] | str] = {}
    for name, value in headers:
        key = name.lower()
        if key in redact or (secrets and any(s in value for s in secrets)):
            value = REDACTED
        have = out.get(key)
        if have is None:
            out[key] = value
        elif isinstance(have, list):
            have.append(value)
        else:
            out[key] = [have, value]
    return out


@lru_cache(maxsize=1024)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))


_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))
# (second, its formatted prefix) of the last timestamp: records arrive many per second, and
# replacing the whole tuple at once keeps it consistent when two threads format timestamps.
_last_second: tuple[int, str] = (0, _second(0))


# Lower-cased redaction sets by the frozenset the settings hold: a plain dict lookup (a
# frozenset caches its hash) costs a fraction of lru_cache's call, and this runs per header list.
_LOWERED: dict[frozenset[str], frozenset[str]] = {}


def _lowered(names: frozenset[str]) -> frozenset[str]:
    lowered = _LOWERED.get(names)
    if lowered is None:
        if len(_LOWERED) >= 64:  # settings change rarely; never grow without bound
            _LOWERED.clear()
        lowered = _LOWERED[names] = frozenset(n.lower() for n in names)
    return lowered


def iso_timestamp(epoch: float) -> str:
    """ECS @timestamp: ISO 8601 UTC with milliseconds, e.g. 2026-11-22T06:22:01.123Z."""
    global _last_second
    ms = int(epoch * 1000)  # truncated, as ECS producers do: never a time in the future
    second, millis = divmod(ms, 1000)
    last = _last_second
    if last[0] != second:
        last = _last_second = (second, _second(second))
    return last[1] + _MILLIS[millis]


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp (a naive one is taken as UTC); ValueError if bad."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def scrub_record(value, secrets: tuple[str, ...]):
    """A copy of a JSON-like value with secrets replaced in every string (keys included)."""
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {scrub_text(str(k), secrets): scrub_record(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_record(v, secrets) for v in value]
    return value
