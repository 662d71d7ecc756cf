"""The pure entry points the mitmproxy adapter calls: inspect a text or a body, decide.

Decision rules (SPEC §3):
- any enforce-mode `block` match, literal or in a decoded variant, blocks (`blocked_by`);
- `redact` matches in the literal text are replaced by `[REDACTED:<filter>]`; in a JSON body the
  decoded string values are redacted when escapes hide a match or the span edit would break the
  JSON; a `redact` filter that still matches any decoded variant after that (the value also
  travels encoded, where it cannot be cut out) blocks instead;
- `alert` matches are reported once per filter in `alerts`;
- report-mode filters refuse and rewrite nothing: their names land in `would_block`.
- a scan timeout, an undecodable body or any internal failure sets `error` (fail closed).

Inspection never holds matched text: only filter names, actions, targets and offsets, which
is what the adapter may log.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
from dataclasses import dataclass, field

from .decode import decode_content, form_fields, media_type
from .errors import DecodeError, ScanTimeout, TooLarge
from .evasions import Evasions, Variant
from .scanner import Scanner
from .spec import Match

log = logging.getLogger(__name__)

DEFAULT_EVASIONS = Evasions()
INSPECTION_ERROR = "inspection_error"
# Codecs (codecs.lookup names) that decode every byte below 0x80 to that ASCII character and
# every other byte to a non-ASCII one (or reject it). EBCDIC, UTF-16 and the like do not.
ASCII_COMPATIBLE = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})
TOO_LARGE = "too_large"


@dataclass(frozen=True)
class Inspection:
    matches: list[Match] = field(default_factory=list)
    blocked_by: str | None = None
    redacted: bytes | str | None = None  # the rewritten (identity-encoded) content, if any
    alerts: list[Match] = field(default_factory=list)
    error: str | None = None  # inspection_error | too_large
    would_block: list[str] = field(default_factory=list)  # report-mode filters that would act

    @property
    def refused(self) -> bool:
        return self.error is not None or self.blocked_by is not None


def replacement(name: str) -> str:
    return f"[REDACTED:{name}]"


def redact_spans(text: str, matches: list[Match]) -> str:
    """Replace each match by `[REDACTED:<filter>]`; overlapping matches merge under the first."""
    spans: list[list] = []
    for m in sorted(matches, key=lambda m: (m.start, -m.end)):
        if spans and m.start < spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], m.end)
        else:
            spans.append([m.start, m.end, m.filter])
    out, pos = [], 0
    for start, end, name in spans:
        out.append(text[pos:start])
        out.append(replacement(name))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _looks_like_json(text: str) -> bool:
    head = text.lstrip()[:1]
    return head in ("{", "[", '"')


def _redact_json(scanner: Scanner, target: str, text: str) -> str | None:
    """Redact inside decoded JSON strings and re-serialise; None when the text is not JSON."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None

    def walk(node):
        if isinstance(node, str):
            hits = [m for m in scanner.scan(node, target) if m.action == "redact" and m.mode == "enforce"]
            return redact_spans(node, hits) if hits else node
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, dict):
            return {walk(k): walk(v) for k, v in node.items()}
        return node

    return json.dumps(walk(doc), ensure_ascii=False, separators=(",", ":"))


def _first_by_filter(matches: list[Match]) -> list[Match]:
    seen: set[str] = set()
    out = []
    for m in matches:
        if m.filter not in seen:
            seen.add(m.filter)
            out.append(m)
    return out


def _scan_variants(scanner: Scanner, target: str, variants: list[Variant]) -> list[Match]:
    out: list[Match] = []
    for v in variants:
        out.extend(scanner.scan(v.text, f"{target}|{v.description}"))
    return out


def inspect_text(
    scanner: Scanner,
    target: str,
    text: str,
    *,
    evasions: Evasions | None = DEFAULT_EVASIONS,
    extra_variants: tuple[Variant, ...] = (),
    raw: bytes | None = None,
    utf8: bytes | None = None,
) -> Inspection:
    """Scan `text` (and its decoded variants) for `target` and decide. Never raises.
    `raw` (see Scanner.scan) and `utf8` (text's UTF-8) spare re-encoding a large body."""
    if not scanner.watches(target) and not extra_variants:
        return Inspection()  # no filter looks here: decoding variants would be work for nothing
    try:
        return _inspect(scanner, target, text, evasions, extra_variants, raw, utf8)
    except ScanTimeout:
        log.warning("content scan of %s timed out", target)
        return Inspection(error=INSPECTION_ERROR)
    except Exception as exc:  # noqa: BLE001 - fail closed; log the type only, never content
        log.error("content inspection of %s failed: %s", target, type(exc).__name__)
        return Inspection(error=INSPECTION_ERROR)


def _inspect(scanner, target, text, evasions, extra_variants, raw=None, utf8=None) -> Inspection:
    literal = scanner.scan(text, target, raw=raw)
    variants = list(extra_variants) + (evasions.all_variants(text, utf8=utf8) if evasions else [])
    if not literal and not variants:
        return Inspection()  # clean and nothing encoded: most traffic ends here
    encoded = _scan_variants(scanner, target, variants)
    every = literal + encoded
    enforce = [m for m in every if m.mode == "enforce"]
    would_block = sorted({m.filter for m in every if m.mode == "report" and m.action != "alert"})
    alerts = _first_by_filter([m for m in every if m.action == "alert"])
    result = dict(matches=every, alerts=alerts, would_block=would_block)

    blocking = [m for m in enforce if m.action == "block"]
    if blocking:
        return Inspection(blocked_by=blocking[0].filter, **result)

    to_redact = [m for m in literal if m.action == "redact" and m.mode == "enforce"]
    if not any(m.action == "redact" for m in enforce):
        return Inspection(**result)
    cut = {m.filter for m in to_redact}
    hidden = [m for m in enforce if m.action == "redact" and m.target.endswith("|form") and m.filter not in cut]
    if hidden:
        # Only a decoded form field shows it (quoted-printable, base64 part): nothing in the
        # text can be cut, so the value would travel as it is. Refuse instead.
        return Inspection(blocked_by=hidden[0].filter, **result)
    redacted = redact_spans(text, to_redact) if to_redact else text
    leftover = None
    if _looks_like_json(text) and _is_json(text):
        if not _is_json(redacted) or (leftover := _leftover(scanner, target, redacted, evasions)):
            # Inside JSON strings, redact the decoded values (escapes and all) and re-serialise.
            redacted = _redact_json(scanner, target, text)
            if redacted is None:
                return Inspection(error=INSPECTION_ERROR, **result)
            leftover = None  # the re-serialised text is checked afresh below
    if leftover is None:
        leftover = _leftover(scanner, target, redacted, evasions)
    if leftover:
        # An encoded copy survives literal redaction: refuse rather than forward it.
        return Inspection(blocked_by=leftover[0].filter, **result)
    return Inspection(redacted=redacted if redacted != text else None, **result)


def _leftover(scanner, target, text, evasions) -> list[Match]:
    """Enforce-mode redact matches still present in `text` or in its decoded variants.

    Form-field variants are not rechecked: they were cut from the text before redaction.
    """
    variants = evasions.all_variants(text) if evasions else []
    again = scanner.scan(text, target) + _scan_variants(scanner, target, variants)
    return [m for m in again if m.action == "redact" and m.mode == "enforce"]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def body_charset(content_type: str | None) -> str:
    """The codecs name of a body's declared charset (UTF-8 when none or unknown)."""
    charset = media_type(content_type)[1].get("charset", "utf-8").lower()
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def body_text(body: bytes, content_type: str | None) -> tuple[str, str, str]:
    """(text, codec, errors) such that text.encode(codec, errors) == body."""
    codec = body_charset(content_type)
    if codec != "utf-8":
        try:
            return body.decode(codec), codec, "strict"
        except UnicodeDecodeError:
            pass
    try:
        return body.decode("utf-8"), "utf-8", "strict"
    except UnicodeDecodeError:
        # Not (or not validly) the declared charset: scan the UTF-8 reading, keep bytes exact.
        return body.decode("utf-8", "surrogateescape"), "utf-8", "surrogateescape"


def inspect_body(
    scanner: Scanner,
    target: str,
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None,
    max_size: int,
    max_ratio: float = 100.0,
    evasions: Evasions | None = DEFAULT_EVASIONS,
) -> Inspection:
    """Decode (bounded), scan and decide. `redacted` is the identity-encoded body: the adapter
    drops Content-Encoding and recomputes Content-Length when it forwards it."""
    if not scanner.watches(target):
        return Inspection()
    try:
        decoded = decode_content(body, content_encoding, max_size=max_size, max_ratio=max_ratio)
    except TooLarge:
        return Inspection(error=TOO_LARGE)
    except DecodeError as exc:
        log.warning("undecodable %s: %s", target, exc)
        return Inspection(error=INSPECTION_ERROR)
    try:
        text, codec, errors = body_text(decoded, content_type)
        fields = form_fields(decoded, content_type)
    except DecodeError as exc:
        log.warning("undecodable %s: %s", target, exc)
        return Inspection(error=INSPECTION_ERROR)
    except Exception as exc:  # noqa: BLE001 - fail closed
        log.error("decoding %s failed: %s", target, type(exc).__name__)
        return Inspection(error=INSPECTION_ERROR)
    extra = (Variant("form", "\n".join(f"{k}={v}" for k, v in fields)),) if fields else ()
    # The body's bytes spare re-encoding its text: for the scanner when they are one byte per
    # character of an ASCII-keeping codec or valid UTF-8, for the evasion finder when UTF-8.
    utf8 = decoded if codec == "utf-8" and errors == "strict" else None
    raw = decoded if utf8 is not None or (codec in ASCII_COMPATIBLE and len(decoded) == len(text)) else None
    result = inspect_text(scanner, target, text, evasions=evasions, extra_variants=extra, raw=raw, utf8=utf8)
    if isinstance(result.redacted, str):
        try:
            data = result.redacted.encode(codec, errors)
        except UnicodeEncodeError:
            data = result.redacted.encode("utf-8", "surrogateescape")
        result = Inspection(
            matches=result.matches, blocked_by=result.blocked_by, redacted=data, alerts=result.alerts,
            error=result.error, would_block=result.would_block,
        )
    return result
