"""Errors the body log reports to an operator or to the proxy adapter."""

from __future__ import annotations

from clearwall.errors import ClearwallError


class AuditError(ClearwallError):
    """A log directory, log file or review argument is unusable; the message names it."""


class LogBackpressure(AuditError):
    """The writer's queue is full: the caller must refuse the flow (fail closed) or await."""


class LogClosed(AuditError):
    """A record was submitted to a writer that is closed or was never started."""
