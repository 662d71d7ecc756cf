"""Decisions: a result plus a stable reason, and the refusal kinds of SPEC §4."""

from __future__ import annotations

from dataclasses import dataclass, field

# Refusal kind -> HTTP status (SPEC §4). The set is closed: adapters never invent a kind.
STATUS: dict[str, int] = {
    "destination_denied": 403,
    "request_denied": 403,
    "content_blocked": 403,
    "response_blocked": 502,
    "request_too_large": 413,
    "response_too_large": 502,
    "rate_limited": 429,
    "auth_required": 407,
    "inspection_error": 502,
}

DEFAULT_RULE = "default"


@dataclass(frozen=True)
class Refusal:
    kind: str
    rule: str
    message: str

    def __post_init__(self) -> None:
        if self.kind not in STATUS:
            raise ValueError(f"unknown refusal kind {self.kind!r}")

    @property
    def status(self) -> int:
        return STATUS[self.kind]


@dataclass(frozen=True)
class Step:
    """One rule the engine consulted, for `rules explain` and log records."""

    rule: str
    section: str  # deny | destination | default | filter | rate_limit | client
    outcome: str  # matched | skipped | refused | allowed | would_block
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    """`refusal` None means allowed. `would_block` lists refusals waived by report mode."""

    refusal: Refusal | None
    destination: str | None = None
    would_block: tuple[Refusal, ...] = ()
    trace: tuple[Step, ...] = field(default=(), compare=False)

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def action(self) -> str:
        if self.refusal is not None:
            return "rate_limited" if self.refusal.kind == "rate_limited" else "blocked"
        return "would_block" if self.would_block else "allowed"

    @property
    def rules(self) -> list[str]:
        names = [r.rule for r in ((self.refusal,) if self.refusal else ()) + self.would_block]
        if self.destination and self.destination not in names:
            names.append(self.destination)
        return names
