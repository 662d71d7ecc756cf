"""Bounded decoding of HTTP bodies: Content-Encoding layers and form fields.

mitmproxy's own `.content` decoding is unbounded; the adapter passes `raw_content` here instead.
Every decompressor is driven incrementally and never asked for more than `max_size + 1` bytes,
so a decompression bomb costs at most the cap (plus one brotli step, see `_brotli`).
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import io
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import parse_qsl

from .errors import DecodeError, TooLarge

try:
    import brotli
except ImportError:  # pragma: no cover - brotli ships with mitmproxy
    brotli = None
try:
    import zstandard
except ImportError:  # pragma: no cover - zstandard ships with mitmproxy
    zstandard = None

_CHUNK = 64 * 1024
# Outputs this small cannot hurt, and gzip of tiny JSON legitimately exceeds 100:1.
MIN_RATIO_CHECK = 64 * 1024


def parse_encodings(content_encoding: str | None) -> list[str]:
    """`gzip, br` -> ["gzip", "br"] (order applied by the sender); identity dropped."""
    if not content_encoding:
        return []
    out = []
    for token in content_encoding.split(","):
        name = token.strip().lower()
        if name in ("", "identity"):
            continue
        if name == "x-gzip":
            name = "gzip"
        if name not in ("gzip", "deflate", "br", "zstd"):
            raise DecodeError(f"unsupported Content-Encoding {name!r}")
        out.append(name)
    return out


class _Budget:
    """Tracks decoded bytes against the size cap and the ratio cap of the whole body."""

    def __init__(self, compressed: int, max_size: int, max_ratio: float) -> None:
        self.compressed, self.max_size, self.max_ratio = max(compressed, 1), max_size, max_ratio

    def check(self, produced: int) -> None:
        if produced > self.max_size:
            raise TooLarge(f"decoded body exceeds {self.max_size} bytes")
        if produced > MIN_RATIO_CHECK and produced > self.max_ratio * self.compressed:
            raise TooLarge(f"decoded body exceeds the {self.max_ratio:g}:1 compression ratio cap")


def _zlib(data: bytes, wbits: int, budget: _Budget) -> bytes:
    out = bytearray()
    rest = data
    while True:
        d = zlib.decompressobj(wbits)
        pending = rest
        while pending:
            try:
                chunk = d.decompress(pending, budget.max_size + 1 - len(out))
            except zlib.error as exc:
                raise DecodeError(f"corrupt compressed body: {exc}") from None
            out += chunk
            budget.check(len(out))
            pending = d.unconsumed_tail
            if d.eof:
                break
            if not chunk and not pending:
                break
        if not d.eof:
            raise DecodeError("truncated compressed body")
        rest = d.unused_data
        # gzip allows concatenated members; zlib/raw deflate streams end at eof.
        if not rest or wbits != 16 + zlib.MAX_WBITS:
            if rest.strip(b"\0"):
                raise DecodeError("trailing data after the compressed body")
            return bytes(out)


def _deflate(data: bytes, budget: _Budget) -> bytes:
    # "deflate" is specified as zlib-wrapped, but many servers send raw deflate.
    wbits = zlib.MAX_WBITS if len(data) >= 2 and (data[0] * 256 + data[1]) % 31 == 0 and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
    return _zlib(data, wbits, budget)


# One brotli input byte can expand to ~8 MiB, and brotli 1.1 has no output limit: feed small
# steps so the overshoot past the cap stays bounded (measured <= 8 MiB per byte).
_BROTLI_STEP = 16


def _brotli(data: bytes, budget: _Budget) -> bytes:
    if brotli is None:
        raise DecodeError("brotli-encoded body but the brotli package is not installed")
    d = brotli.Decompressor()
    out = bytearray()
    try:
        for i in range(0, len(data), _BROTLI_STEP):
            out += d.process(data[i : i + _BROTLI_STEP])
            budget.check(len(out))
        finished = d.is_finished()
    except brotli.error as exc:
        raise DecodeError(f"corrupt brotli body: {exc}") from None
    if not finished:
        raise DecodeError("truncated brotli body")
    return bytes(out)


def _zstd(data: bytes, budget: _Budget) -> bytes:
    if zstandard is None:
        raise DecodeError("zstd-encoded body but the zstandard package is not installed")
    # A frame may ask for a huge window; refuse above 128 MiB of decoder memory.
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    out = bytearray()
    try:
        with dctx.stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            while True:
                chunk = reader.read(min(_CHUNK, budget.max_size + 1 - len(out)) or 1)
                if not chunk:
                    break
                out += chunk
                budget.check(len(out))
    except zstandard.ZstdError as exc:
        raise DecodeError(f"corrupt zstd body: {exc}") from None
    return bytes(out)


_DECODERS = {"gzip": lambda d, b: _zlib(d, 16 + zlib.MAX_WBITS, b), "deflate": _deflate, "br": _brotli, "zstd": _zstd}


def decode_content(body: bytes, content_encoding: str | None, *, max_size: int, max_ratio: float = 100.0) -> bytes:
    """Undo every Content-Encoding layer (last applied first) within the size and ratio caps.

    Raises DecodeError when the body is not what the header claims, TooLarge on a bomb.
    """
    if max_size < 0 or max_ratio <= 0:
        raise ValueError("max_size must be >= 0 and max_ratio > 0")
    budget = _Budget(len(body), max_size, max_ratio)
    for name in reversed(parse_encodings(content_encoding)):
        body = _DECODERS[name](body, budget)
    budget.check(len(body))
    return body


@functools.lru_cache(maxsize=256)
def media_type(content_type: str | None) -> tuple[str, Mapping[str, str]]:
    """`text/html; charset=UTF-8` -> ("text/html", {"charset": "UTF-8"}) (read-only, cached:
    every body is typed by one of a few headers)."""
    if not content_type:
        return "", _NO_PARAMS
    head, *params = content_type.split(";")
    out = {}
    for p in params:
        k, _, v = p.partition("=")
        if k.strip():
            out[k.strip().lower()] = v.strip().strip('"')
    return head.strip().lower(), MappingProxyType(out)


_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def form_fields(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of an urlencoded or multipart/form-data body, else []."""
    kind, params = media_type(content_type)
    if kind == "application/x-www-form-urlencoded":
        try:
            text = body.decode(params.get("charset", "utf-8"))
        except (UnicodeDecodeError, LookupError):
            raise DecodeError("form body is not valid text in its declared charset") from None
        return parse_qsl(text, keep_blank_values=True)
    if kind == "multipart/form-data":
        boundary = params.get("boundary")
        if not boundary:
            raise DecodeError("multipart body without a boundary")
        head = f'Content-Type: multipart/form-data; boundary="{boundary}"\r\n\r\n'.encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not msg.is_multipart() or msg.defects:
            raise DecodeError("multipart body does not match its boundary")
        out = []
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True) or b""
            name = part.get_param("name", header="content-disposition") or ""
            out.append((str(name), payload.decode(part.get_content_charset() or "utf-8", "replace")))
        return out
    return []
