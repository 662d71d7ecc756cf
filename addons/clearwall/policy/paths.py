"""Request paths: normalised before matching, and glob patterns (`*` one segment, `**` any).

Normalisation decodes percent-encoded unreserved characters and removes dot segments
(RFC 3986 §5.2.4), so `/repos/%2e%2e/admin` cannot sneak past a `/repos/**` rule. What an
upstream might interpret differently from us is refused instead of guessed at: an encoded `/`
or `\\`, a literal `\\`, a NUL, or a dot segment that would climb above the root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


class PathRefused(ValueError):
    """The path is ambiguous or climbs above the root; the request is refused."""


def _decode_unreserved(m: re.Match) -> str:
    ch = chr(int(m.group(1), 16))
    if ch in _UNRESERVED:
        return ch
    if ch in "/\\":
        raise PathRefused(f"encoded {'slash' if ch == '/' else 'backslash'} (%{m.group(1)}) in path")
    if ch == "\0":
        raise PathRefused("encoded NUL (%00) in path")
    return "%" + m.group(1).upper()


def normalize_path(raw: str) -> str:
    """The path part of a request target (query removed), normalised for matching."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        # Absolute-form targets are split by the adapter; `*` (OPTIONS) and empty are refused.
        raise PathRefused(f"request path {raw[:80]!r} does not start with /")
    if "\\" in path or "\0" in path:
        raise PathRefused("backslash or NUL in path")
    if _BAD_PCT.search(path):
        raise PathRefused("malformed percent-encoding in path")
    path = _PCT.sub(_decode_unreserved, path)
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if not out:
                raise PathRefused("dot segment climbs above the root")
            out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


@dataclass(frozen=True)
class PathPattern:
    """One entry of a rule's `paths:` list, compiled to an anchored regular expression."""

    text: str
    regex: re.Pattern

    def matches(self, normalized_path: str) -> bool:
        return self.regex.fullmatch(normalized_path) is not None


def parse_path_pattern(text: str) -> PathPattern:
    """`/repos/**` matches `/repos` and everything below it; `/search/*` one segment below."""
    if not isinstance(text, str) or not text.startswith("/"):
        raise ValueError(f"path pattern {text!r} must start with / (e.g. \"/repos/**\")")
    if "?" in text or "#" in text:
        raise ValueError(f"path pattern {text!r} must not contain a query or fragment")
    parts: list[str] = []
    for seg in text.split("/")[1:]:
        if seg == "**":
            parts.append("(?:/[^/]*)*")  # zero or more whole segments
        elif "**" in seg:
            raise ValueError(f"path pattern {text!r}: `**` must be a whole segment (e.g. \"/a/**/b\")")
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in seg.split("*")))
    if parts and parts[-1] == "(?:/[^/]*)*":
        parts[-1] = "(?:/.*)?"  # a trailing /** also matches the directory itself and a trailing slash
    return PathPattern(text, re.compile("".join(parts) or "/"))
