"""The filter description the scanner works from.

The rule-file loader (policy/) converts its validated model into `FilterSpec`s; this module only
knows the vocabulary so that content inspection stays independent of the rule model.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = frozenset(
    {
        "request.url",
        "request.headers",
        "request.body",
        "response.headers",
        "response.body",
        "sse",
        "websocket",
        "mcp.arguments",
    }
)
# A library entry without `where` applies to every request-side target: secrets leave by requests.
REQUEST_TARGETS = frozenset({"request.url", "request.headers", "request.body", "mcp.arguments"})
ACTIONS = ("block", "redact", "alert")
MODES = ("enforce", "report")


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One content filter: a `regex`-package pattern, where it applies and what a match does.

    If the pattern has a named group `secret`, a match is located, validated and redacted by
    that group only, so `password=hunter2` becomes `password=[REDACTED:name]`.
    """

    name: str
    pattern: str
    where: frozenset[str] = REQUEST_TARGETS
    action: str = "block"
    mode: str = "enforce"
    validate: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a filter needs a name")
        if self.action not in ACTIONS:
            raise ValueError(f"filter {self.name!r}: action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        if self.mode not in MODES:
            raise ValueError(f"filter {self.name!r}: mode must be enforce or report, not {self.mode!r}")
        unknown = set(self.where) - TARGETS
        if unknown:
            raise ValueError(f"filter {self.name!r}: unknown target {sorted(unknown)[0]!r}")
        object.__setattr__(self, "where", frozenset(self.where))


@dataclass(frozen=True, slots=True)
class Match:
    """A located match. Never carries the matched text: callers log only these fields."""

    filter: str
    action: str
    target: str
    start: int
    end: int
    mode: str = "enforce"
