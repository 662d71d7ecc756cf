"""Decoded variants of a text, so a secret cannot slip out merely encoded.

Each decoder undoes one common disguise: percent-encoding, JSON string escapes, base64 and hex
runs, invisible format characters, HTML entities. Variants are decoded again, `max_depth` layers
deep (`percent+base64` is base64 found after percent-decoding), and bounded in number and total
size: an adversary cannot make inspection expensive by stacking encodings. A decoder that does
not change the text produces no variant, so ordinary traffic costs one cheap check per decoder.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .errors import TooManyVariants
from .runs import B64_STD, B64_URL, HEX, HEX_HIGH, RunFinder, b64_textlike, have_hyperscan, mostly, tokens
from .textdecoders import as_text, has_entity, has_percent, html_entities, invisible, json_escapes, percent, score


@dataclass(frozen=True, slots=True)
class Variant:
    description: str  # e.g. "percent", "json+base64"
    text: str


class Evasions:
    """Generates decoded variants of a text. Immutable and thread-safe."""

    def __init__(
        self,
        *,
        max_depth: int = 2,
        max_variants: int = 32,
        max_total: int = 16 * 1024 * 1024,
        min_base64: int = 16,
        min_hex: int = 16,
    ) -> None:
        if max_depth < 1 or max_variants < 1 or max_total < 1 or min_base64 < 8 or min_hex < 8:
            raise ValueError("max_depth, max_variants, max_total >= 1; min_base64, min_hex >= 8")
        self.max_depth, self.max_variants, self.max_total = max_depth, max_variants, max_total
        self.min_base64, self.min_hex = min_base64, min_hex
        self._finder = RunFinder(min_base64, min_hex) if have_hyperscan() else None
        self._local = threading.local()
        self.decoders: list[tuple[str, Callable[[str], str | None]]] = [
            ("percent", percent),
            ("json", json_escapes),
            ("base64", self.base64_runs),
            ("hex", self.hex_runs),
            ("invisible", self.invisible),
            ("html", html_entities),
        ]

    def _analyse(self, text: str) -> tuple[bytes, dict[str, list[int]] | None]:
        """UTF-8 bytes of `text` and the finder's report, computed once per text and thread."""
        last = getattr(self._local, "last", None)
        if last is not None and last[0] is text:
            return last[1], last[2]
        data = text.encode("utf-8", "surrogatepass")
        report = self._finder.scan(data) if self._finder is not None else None
        self._local.last = (text, data, report)
        return data, report

    def invisible(self, text: str) -> str | None:
        if text.isascii():
            return None
        _data, report = self._analyse(text)
        if report is not None and "invisible" not in report:
            return None
        return invisible(text)

    def _runs(self, text: str, kind: str) -> list[bytes]:
        """Candidate runs of one alphabet (`std`, `url`, `hex`) at least the minimum long."""
        table, minimum = (HEX, self.min_hex) if kind == "hex" else (B64_STD if kind == "std" else B64_URL, self.min_base64)
        data, report = self._analyse(text)
        if report is None:
            return tokens(data, table, minimum)
        ends = report.get(kind)
        if not ends:
            return []
        # Hyperscan saw the fingerprint of encoded text ending at these offsets: widen each to
        # its whole run of the alphabet.
        mapped = data.translate(table)
        out, covered = [], -1
        for end in ends:
            if end <= covered:
                continue
            start = mapped.rfind(b" ", 0, end) + 1
            stop = mapped.find(b" ", end)
            covered = stop = len(mapped) if stop < 0 else stop
            out.extend(p for p in data[start:stop].split(b"=") if len(p) >= minimum)
        return out

    def base64_runs(self, text: str) -> str | None:
        """Runs of >= min_base64 base64 (standard or URL-safe) characters that decode to text."""
        found: list[str] = []
        seen: set[bytes] = set()
        for kind, urlsafe in (("std", False), ("url", True)):
            for run in self._runs(text, kind):
                # Base64 of text mixes cases; identifiers, hex digests and numbers do not.
                if run.islower() or run.isupper() or run.isdigit() or run in seen:
                    continue
                if urlsafe and b"-" not in run and b"_" not in run:
                    continue  # plain alphanumeric runs were already tried as standard base64
                seen.add(run)
                # With the finder, the run already showed the fingerprint of encoded text
                # somewhere (perhaps only around a secret inside non-ASCII text).
                decoded = self._decode_base64(run, urlsafe, checked=self._finder is not None)
                if decoded:
                    found.append(decoded)
        return "\n".join(found) or None

    def _decode_base64(self, run: bytes, urlsafe: bool, *, checked: bool = False) -> str | None:
        # A run may start mid-group (glued to a prefix): keep the alignment that decodes to the
        # most printable text.
        best: tuple[float, str] | None = None
        for shift in range(4):
            part = run[shift:]
            if len(part) % 4 == 1:
                part = part[:-1]  # one dangling character carries no whole byte
            if len(part) < self.min_base64 or not (checked or b64_textlike(part)):
                continue
            part += b"=" * (-len(part) % 4)
            try:
                raw = base64.b64decode(part, altchars=b"-_" if urlsafe else None, validate=True)
            except (binascii.Error, ValueError):
                continue
            decoded = as_text(raw)
            if decoded and (best is None or score(decoded) > best[0]):
                best = (score(decoded), decoded)
        return best[1] if best else None

    def hex_runs(self, text: str) -> str | None:
        """Runs of >= min_hex hex digits that decode to text."""
        found = []
        for run in self._runs(text, "hex"):
            if not mostly(run[0:64:2], HEX_HIGH, 0.6) and not mostly(run[1:65:2], HEX_HIGH, 0.6):
                continue  # a digest or an id, not hex-encoded text (quick look at the start)
            for shift in (0, 1):
                part = run[shift : len(run) - (len(run) - shift) % 2]
                if len(part) < self.min_hex or not mostly(part[0::2], HEX_HIGH, 0.9):
                    continue
                decoded = as_text(bytes.fromhex(part.decode("ascii")))
                if decoded:
                    found.append(decoded)
        return "\n".join(found) or None

    def variants(self, text: str, *, utf8: bytes | None = None) -> list[Variant]:
        """Decoded variants, breadth first, each different from the text it came from, up to
        the limits. `utf8`: text's UTF-8 encoding when the caller has it (a body it was decoded
        from)."""
        return self._bounded(text, utf8)[0]

    def all_variants(self, text: str, *, utf8: bytes | None = None) -> list[Variant]:
        """Every decoded variant, or TooManyVariants: inspection must not pass a text whose
        decodings it did not all see (decoy encodings could push the real one past a limit)."""
        out, complete = self._bounded(text, utf8)
        if not complete:
            raise TooManyVariants(f"more than {self.max_variants} decoded variants or {self.max_total} bytes of them")
        return out

    def _bounded(self, text: str, utf8: bytes | None) -> tuple[list[Variant], bool]:
        try:
            if utf8 is not None:
                self._local.last = (text, utf8, self._finder.scan(utf8) if self._finder is not None else None)
            return self._variants(text)
        finally:
            self._local.last = None  # do not keep the last body alive between calls

    def _nothing_to_decode(self, text: str) -> bool:
        """True when no decoder can change `text`: decided with one finder pass and three
        substring checks instead of six decoder calls (most request and response bodies)."""
        if self._finder is None or "\\" in text or has_percent(text) or has_entity(text):
            return False
        _data, report = self._analyse(text)
        return not report  # no base64, hex or invisible-character fingerprint anywhere

    def _variants(self, text: str) -> tuple[list[Variant], bool]:
        """(variants, complete): complete is False when a limit cut the list short."""
        if self._nothing_to_decode(text):
            return [], True
        out: list[Variant] = []
        total = 0
        layer = [Variant("", text)]
        for _depth in range(self.max_depth):
            next_layer = []
            for parent in layer:
                for name, decode in self.decoders:
                    decoded = decode(parent.text)
                    if decoded is None or decoded == parent.text:
                        continue
                    if len(out) >= self.max_variants or total + len(decoded) > self.max_total:
                        return out, False
                    desc = f"{parent.description}+{name}" if parent.description else name
                    v = Variant(desc, decoded)
                    out.append(v)
                    next_layer.append(v)
                    total += len(decoded)
            layer = next_layer
        return out, True
