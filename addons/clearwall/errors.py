"""Clearwall's closed error hierarchy.

Every error an operator can cause (a bad rule file, an unreadable CA, a port in use) is a
`ClearwallError` whose `str()` is one sentence naming the file, value or flag at fault. The CLI
prints it and exits 1; anything else escaping is a bug.
"""

from __future__ import annotations


class ClearwallError(Exception):
    """Base of every error Clearwall reports to an operator."""


class RuleError(ClearwallError):
    """One problem in a rule file, located at file:line:column."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file, self.line, self.column, self.message = file, line, column, message
        super().__init__(f"{file}:{line}:{column}: {message}")


class RuleSetError(ClearwallError):
    """A rule set failed to load; `errors` lists every problem found, in file order."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class CAError(ClearwallError):
    """The private CA is missing, half-present, unreadable or unsafe."""


class StartupError(ClearwallError):
    """The proxy cannot start (port in use, bad flag, unwritable directory)."""
