"""Credentials Clearwall holds for clients: where they come from, how they are swapped in, and
how a client trying to send one somewhere is recognised (pure; no mitmproxy).

A destination's `inject_headers` values are already substituted by the loader (`${VAR}` from the
environment, `${file:PATH}` from a file). Which part of "Bearer ${TOKEN}" is the secret is only
known from the template as written, so the rule file is read again without substitution and each
template is matched against its loaded value: the text that each `${...}` produced is a secret.
That keeps "Bearer " out of the exfiltration needles and lets `require: true` tell an empty
variable from a short value.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

from clearwall.policy.ruleset import RuleSet
from clearwall.policy.yamlpos import load_yaml

try:  # optional (x86_64 Linux): one linear pass over the body for every needle
    import hyperscan as _hs
except ImportError:  # pragma: no cover - the re fallback gives the same answers
    _hs = None

_REF = re.compile(r"\$(\$)|\$\{[^}]*\}")
MIN_NEEDLE = 8  # shorter secrets are scrubbed from the log but not hunted for in requests
EXFIL_RULE = "credential-exfiltration"
_PCT = re.compile(r"%[0-9A-F]{2}")


def secret_parts(template: str | None, value: str) -> tuple[list[str], bool]:
    """(the secrets inside `value`, whether one of them came out empty).

    With a template, the secrets are what its `${...}` references produced; a template without
    references (a literal in the rule file) and an unknown template fall back to the last
    whitespace-separated word ("Bearer abc" -> "abc"), the usual place of a credential.
    Raises ValueError when the template cannot have produced the value.
    """
    if template is not None and _REF.search(template) and any(m.group(1) is None for m in _REF.finditer(template)):
        pattern, pos = [], 0
        for m in _REF.finditer(template):
            pattern.append(re.escape(template[pos:m.start()]))
            pattern.append(r"\$" if m.group(1) else "(.*?)")
            pos = m.end()
        pattern.append(re.escape(template[pos:]))
        found = re.fullmatch("".join(pattern), value, re.DOTALL)
        if found is None:
            raise ValueError("the loaded value does not follow its template")
        parts = list(found.groups())
        return [p for p in parts if p.strip()], any(not p.strip() for p in parts)
    words = value.split()
    return (words[-1:] if words else []), not words


@dataclass(frozen=True)
class Credential:
    """What one destination injects, strips and swaps."""

    destination: str
    inject: tuple[tuple[str, str], ...] = ()  # (header, value)
    strip: tuple[str, ...] = ()  # lower-cased header names
    placeholders: tuple[tuple[str, str], ...] = ()  # (text the client sends, secret)
    require: bool = False
    missing: tuple[str, ...] = ()  # header names / placeholders whose secret came out empty
    secrets: frozenset[str] = field(default=frozenset(), repr=False)  # every value to keep out of logs

    @property
    def active(self) -> bool:
        return bool(self.inject or self.strip or self.placeholders)


def _raw_templates(ruleset: RuleSet, name: str, docs: dict[str, dict | None]) -> dict | None:
    """The destination entry `name` as written (no substitution), or None when unknown.

    `docs` caches each rule file's raw parse for one `credentials_for` call.
    """
    source = ruleset.sources.get(name)
    if not source:
        return None
    path = source.rsplit(":", 1)[0]
    if path not in docs:
        doc = load_yaml(Path(path), substitute_vars=False) if Path(path).is_file() else None
        docs[path] = doc.data if doc is not None and isinstance(doc.data, dict) else None
    data = docs[path]
    for entry in (data or {}).get("destinations") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    return None


def _credential(ruleset: RuleSet, dest, docs: dict[str, dict | None]) -> Credential:
    spec = dest.spec
    raw = _raw_templates(ruleset, dest.name, docs) or {}
    raw_inject = raw.get("inject_headers") if isinstance(raw.get("inject_headers"), dict) else {}
    raw_ph = raw.get("placeholders") if isinstance(raw.get("placeholders"), dict) else {}
    secrets: set[str] = set()
    missing: list[str] = []
    for header, value in spec.inject_headers.items():
        parts, empty = _parts(raw_inject.get(header), value)
        secrets.update(parts)
        if value.strip():
            secrets.add(value)
        if empty:
            missing.append(header)
    for text, value in spec.placeholders.items():
        parts, empty = _parts(raw_ph.get(text), value)
        # A placeholder's whole value is the secret: it replaces the placeholder text verbatim.
        secrets.update(parts)
        if value.strip():
            secrets.add(value)
        if empty or not value.strip():
            missing.append(text)
    return Credential(
        destination=dest.name,
        inject=tuple(spec.inject_headers.items()),
        strip=tuple(h.lower() for h in spec.strip_headers),
        placeholders=tuple(spec.placeholders.items()),
        require=spec.require,
        missing=tuple(missing),
        secrets=frozenset(secrets),
    )


def _parts(template, value: str) -> tuple[list[str], bool]:
    try:
        return secret_parts(template if isinstance(template, str) else None, value)
    except ValueError:
        # The file changed since it was loaded: treat the whole value as the secret.
        return ([value] if value.strip() else []), not value.strip()


def credentials_for(ruleset: RuleSet) -> dict[str, Credential]:
    """Destination name -> Credential, for every destination that injects, strips or swaps."""
    out: dict[str, Credential] = {}
    docs: dict[str, dict | None] = {}
    for dest in ruleset.destinations:
        spec = dest.spec
        if spec is not None and (spec.inject_headers or spec.strip_headers or spec.placeholders):
            out[dest.name] = _credential(ruleset, dest, docs)
    return out


def swap_placeholders(text: str, placeholders: tuple[tuple[str, str], ...], *, url: bool = False) -> str:
    """`text` with each placeholder replaced by its secret (percent-encoded inside a URL)."""
    for ph, value in placeholders:
        if ph in text:
            text = text.replace(ph, quote(value, safe="") if url else value)
    return text


def _base64_forms(raw: bytes) -> set[bytes]:
    """base64 of `raw` at each of the three alignments it can take inside a longer encoded run."""
    forms: set[bytes] = set()
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw)
        # Drop the characters that depend on the (unknown) bytes before and after the secret.
        start = (shift * 4 + 2) // 3
        end = (4 * (shift + len(raw))) // 3
        core = enc[start:end]
        if len(core) >= MIN_NEEDLE:
            forms.add(core)
            forms.add(core.replace(b"+", b"-").replace(b"/", b"_"))
    return forms


def encoded_forms(secret: str) -> set[bytes]:
    """The secret as a client might send it: plain, percent-encoded, base64, hex."""
    raw = secret.encode("utf-8", "surrogateescape")
    every = "".join(f"%{b:02X}" for b in raw)  # every byte escaped, not only the reserved ones
    percent = {quote(secret, safe=""), quote_plus(secret, safe=""), every}
    percent |= {_PCT.sub(lambda m: m.group(0).lower(), p) for p in percent}  # %2f as well as %2F
    forms = {raw, binascii.hexlify(raw), binascii.hexlify(raw).upper()} | {p.encode() for p in percent}
    forms |= _base64_forms(raw)
    return {f for f in forms if len(f) >= MIN_NEEDLE}


class ExfilDetector:
    """Finds any injected secret, lightly encoded or not, in a client's request.

    Hyperscan (when installed) matches all needles in one linear pass; Python's `re` alternation
    is the fallback and gives the same answers (a test compares them) at a fraction of the speed.
    One detector serves many threads: Hyperscan scratch space is per thread.
    """

    def __init__(self, secrets: set[str] | frozenset[str], min_length: int = MIN_NEEDLE,
                 engine: str = "auto") -> None:
        needles: dict[bytes, str] = {}
        for s in secrets:
            if len(s) >= min_length:
                for form in encoded_forms(s):
                    needles.setdefault(form, s)
        self._needles = needles
        # Longest first so the reported form is the most complete one.
        self._ordered = sorted(needles, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(n) for n in self._ordered)) if self._ordered else None
        self._hs = _hs_database(self._ordered) if engine != "regex" and self._ordered else None
        self._local = threading.local()

    def find(self, data: bytes | str) -> tuple[str, str] | None:
        """(the form found, the secret it encodes), or None."""
        if self._pattern is None or not data:
            return None
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        if self._hs is not None:
            hit = self._hs_find(data)
        else:
            m = self._pattern.search(data)
            hit = m.group(0) if m else None
        if hit is None:
            return None
        return hit.decode("utf-8", "replace"), self._needles[hit]

    def _hs_find(self, data: bytes) -> bytes | None:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = _hs.Scratch(self._hs)
        found: list[int] = []

        def on_match(index, _from, _to, _flags, _ctx):
            found.append(index)
            return True  # the first needle is enough: stop scanning

        try:
            self._hs.scan(data, match_event_handler=on_match, scratch=scratch)
        except _hs.ScanTerminated:
            pass
        return self._ordered[found[0]] if found else None

    @property
    def engine(self) -> str:
        return "hyperscan" if self._hs is not None else "regex"

    def __bool__(self) -> bool:
        return self._pattern is not None


def _hs_database(needles: list[bytes]):
    """A Hyperscan database of literal needles, or None without Hyperscan."""
    if _hs is None:
        return None
    db = _hs.Database()
    db.compile(expressions=[b"".join(b"\\x%02x" % c for c in n) for n in needles],
               ids=list(range(len(needles))), elements=len(needles),
               flags=[_hs.HS_FLAG_SINGLEMATCH] * len(needles))
    return db


def all_secrets(creds: dict[str, Credential]) -> frozenset[str]:
    return frozenset(s for c in creds.values() for s in c.secrets)
