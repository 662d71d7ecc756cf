"""Errors raised by content inspection.

`PatternError` is an operator error (a filter pattern that does not compile) and names the filter.
The others are runtime outcomes the adapter turns into refusals: `ScanTimeout` and `DecodeError`
become `inspection_error`, `TooLarge` becomes `request_too_large` / `response_too_large`.
"""

from __future__ import annotations

from clearwall.errors import ClearwallError


class ContentError(ClearwallError):
    """Base of every content-inspection error."""


class PatternError(ContentError):
    """A filter's pattern does not compile, or its validator is unknown."""


class ScanTimeout(ContentError):
    """A scan exceeded its time limit; the traffic must be refused, never passed."""


class DecodeError(ContentError):
    """A body cannot be decoded as its Content-Encoding / Content-Type claims."""


class TooLarge(ContentError):
    """Decoding would exceed the size cap or the compression-ratio cap (a decompression bomb)."""


class TooManyVariants(ContentError):
    """A text decodes into more variants than inspection is bounded to: refused, not passed."""
