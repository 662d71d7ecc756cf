"""The body log (SPEC §5): record shaping, the writer thread, rotation, the hash chain, review.

Nothing in this package imports mitmproxy; the adapter in clearwall.mitm gathers plain values.
"""

from clearwall.audit.errors import AuditError, LogBackpressure, LogClosed
from clearwall.audit.fields import body_field, redact_headers
from clearwall.audit.record import Exchange, Message, build_record, connect_record, tunnel_record
from clearwall.audit.writer import LogWriter

__all__ = [
    "AuditError", "LogBackpressure", "LogClosed", "body_field", "redact_headers", "Exchange",
    "Message", "build_record", "connect_record", "tunnel_record", "LogWriter",
]
