"""Sizes and durations as written in rule files (`10MiB`, `1m`, `none`)."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int | None:
    """`10MiB` -> 10485760; `none` -> None (the cap is off). Raises ValueError."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 10MiB, 512KB or none, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    m = _NUMBER.match(str(value))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"expected a size like 10MiB, 512KB or none, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(value: object) -> float:
    """`1m` -> 60.0, `100ms` -> 0.1; a bare number is seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 100ms, 30s, 1m, 2h or 90d, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _NUMBER.match(str(value))
        unit = m.group(2).lower() if m else None
        if not m or (unit and unit not in _DURATION_UNITS):
            raise ValueError(f"expected a duration like 100ms, 30s, 1m, 2h or 90d, got {value!r}")
        seconds = float(m.group(1)) * _DURATION_UNITS[unit or "s"]
    if seconds <= 0:
        raise ValueError(f"a duration must be greater than zero, got {value!r}")
    return seconds
