"""Validation of the log writer's limits, so a bad setting fails at construction, by name."""

from __future__ import annotations

FSYNC_MODES = ("every", "interval", "never")


def check_settings(
    *,
    fsync: str,
    max_queue: int,
    max_queue_bytes: int | None,
    batch_max: int,
    write_bytes: int,
    rotate_bytes: int | None,
    retention_seconds: float | None,
    housekeeping_nice: int,
) -> None:
    """Raise ValueError naming the first setting out of range."""
    if fsync not in FSYNC_MODES:
        raise ValueError(f"fsync must be one of {FSYNC_MODES}, not {fsync!r}")
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, not {max_queue}")
    if max_queue_bytes is not None and max_queue_bytes < 1:
        raise ValueError(f"max_queue_bytes must be >= 1 or None, not {max_queue_bytes}")
    if not 1 <= batch_max <= 1024:  # one writev call; IOV_MAX is 1024 on Linux
        raise ValueError(f"batch_max must be between 1 and 1024, not {batch_max}")
    if write_bytes < 1:
        raise ValueError(f"write_bytes must be >= 1, not {write_bytes}")
    if rotate_bytes is not None and rotate_bytes < 1:
        raise ValueError(f"rotate_bytes must be >= 1 or None, not {rotate_bytes}")
    if retention_seconds is not None and retention_seconds <= 0:
        raise ValueError(f"retention_seconds must be > 0 or None, not {retention_seconds}")
    if not 0 <= housekeeping_nice <= 19:
        raise ValueError(f"housekeeping_nice must be between 0 and 19, not {housekeeping_nice}")
