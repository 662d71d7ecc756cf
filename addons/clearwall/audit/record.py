"""Pure construction of body-log records (SPEC §5) from plain values the adapter gathers.

The adapter fills an `Exchange` (a WebSocket connection is one with `messages`; or calls
`connect_record` / `tunnel_record`) and hands the result to `LogWriter.submit`. Records are nested ECS
objects; empty parts are left out so a record says only what is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clearwall.audit.fields import (
    REDACTED,
    body_field,
    iso_timestamp,
    redact_headers,
    scrub_record,
)

ACTIONS = frozenset({"allowed", "blocked", "redacted", "rate_limited", "would_block", "error"})

DEFAULT_REDACT = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
DEFAULT_MAX_BODY = 1024 * 1024


@dataclass(slots=True)
class Message:
    """One WebSocket message: direction is "client" (client to server) or "server"."""

    direction: str
    time: float
    content: bytes | str
    action: str = "allowed"


@dataclass(slots=True)
class Exchange:
    """Everything the log knows about one HTTP exchange (or WebSocket connection).

    Slotted: the writer thread reads ~30 fields of every exchange, and creating one is cheaper
    on the event loop.
    """

    timestamp: float
    flow_id: str
    action: str
    reason: str | None = None
    duration: float | None = None  # seconds
    rules: list[str] = field(default_factory=list)
    ruleset: str | None = None
    client_ip: str | None = None
    client_port: int | None = None
    client_user: str | None = None
    client_label: str | None = None
    dest_domain: str | None = None
    dest_ip: str | None = None
    dest_port: int | None = None
    url: str | None = None
    http_version: str | None = None
    method: str | None = None
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes | None = None
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes | None = None
    sni: str | None = None
    mcp_method: str | None = None
    mcp_tool: str | None = None
    mcp_id: Any = None
    matches: list[dict] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    # Shaping settings, carried with the values so the record can be built in any thread.
    max_body_bytes: int | None = DEFAULT_MAX_BODY
    redact: frozenset[str] | set[str] = DEFAULT_REDACT
    secrets: tuple[str, ...] = ()


def _content_type(headers: list[tuple[str, str]]) -> str | None:
    for name, value in headers:
        if name.lower() == "content-type":
            return value
    return None


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"event.action must be one of {sorted(ACTIONS)}, not {action!r}")


def _base(ex: Exchange) -> dict:
    """The parts every record shape shares, without empty parts.

    Written as plain assignments, in the SPEC's key order: this runs once per record in the
    writer thread, where building (name, value) pairs and filtering them cost more than the
    hashing and encoding of a 4 KiB body together.
    """
    _check_action(ex.action)
    record = {"@timestamp": iso_timestamp(ex.timestamp)}
    event = {"id": ex.flow_id} if ex.flow_id is not None else {}
    event["action"] = ex.action
    if ex.reason is not None:
        event["reason"] = ex.reason
    if ex.duration is not None:
        event["duration"] = round(ex.duration * 1e9)  # ECS: integer nanoseconds
    record["event"] = event
    if ex.rules or ex.ruleset is not None:
        rule = {"name": list(ex.rules)} if ex.rules else {}
        if ex.ruleset is not None:
            rule["ruleset"] = ex.ruleset
        record["rule"] = rule
    client = {}
    if ex.client_ip is not None:
        client["ip"] = ex.client_ip
    if ex.client_port is not None:
        client["port"] = ex.client_port
    if ex.client_user is not None:
        client["user"] = {"name": ex.client_user}
    if client:
        record["client"] = client
    if ex.client_label is not None:
        record["labels"] = {"client": ex.client_label}
    dest = {}
    if ex.dest_domain is not None:
        dest["domain"] = ex.dest_domain
    if ex.dest_ip is not None:
        dest["ip"] = ex.dest_ip
    if ex.dest_port is not None:
        dest["port"] = ex.dest_port
    if dest:
        record["destination"] = dest
    if ex.url is not None:
        record["url"] = {"full": ex.url}
    if ex.sni is not None:
        record["tls"] = {"client": {"server_name": ex.sni}}
    if ex.mcp_method is not None or ex.mcp_tool is not None or ex.mcp_id is not None:
        mcp = {}
        if ex.mcp_method is not None:
            mcp["method"] = ex.mcp_method
        if ex.mcp_tool is not None:
            mcp["tool"] = ex.mcp_tool
        if ex.mcp_id is not None:
            mcp["id"] = ex.mcp_id
        record["mcp"] = mcp
    if ex.matches:
        # Only where and which rule matched: the matched text itself may be the secret.
        record["clearwall"] = {"matches": [
            {"rule": m.get("rule"), "where": m.get("where"), "action": m.get("action")}
            for m in ex.matches
        ]}
    return record


def _http_part(ex: Exchange, first_key: str, first, headers, body) -> dict:
    # Built without empty parts, like _base: a record says only what is known.
    part: dict = {}
    if first is not None:
        part[first_key] = first
    content_type = None
    if headers:
        part["headers"] = shaped = redact_headers(headers, ex.redact, ex.secrets)
        # The shaped headers already hold the first Content-Type, unless it was redacted.
        content_type = shaped.get("content-type")
        if isinstance(content_type, list):
            content_type = content_type[0]
        if content_type == REDACTED:
            content_type = _content_type(headers)
    if body is not None:
        part["body"] = body_field(
            body,
            content_type=content_type,
            max_bytes=ex.max_body_bytes,
            secrets=ex.secrets,
        )
    return part


def _http(ex: Exchange) -> dict:
    http: dict = {}
    if ex.http_version:
        http["version"] = ex.http_version
    request = _http_part(ex, "method", ex.method, ex.request_headers, ex.request_body)
    if request:
        http["request"] = request
    response = _http_part(ex, "status_code", ex.status, ex.response_headers, ex.response_body)
    if response:
        http["response"] = response
    return http


def _finish(record: dict, ex: Exchange) -> dict:
    if not ex.extra and not ex.secrets:  # most records: nothing to merge or scrub
        return record
    for key, value in ex.extra.items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    if ex.secrets:
        # Injected credentials must not reach the log anywhere: URL, extra fields, MCP ids.
        record = scrub_record(record, tuple(s for s in ex.secrets if s))
    return record


def build_record(ex: Exchange) -> dict:
    """The log record of one HTTP exchange (with its WebSocket messages, if any)."""
    record = _base(ex)
    http = _http(ex)
    if http:
        record["http"] = http
    if ex.messages:
        record["websocket"] = {"messages": [_message(ex, m) for m in ex.messages]}
    return _finish(record, ex)


def _message(ex: Exchange, m: Message) -> dict:
    data = m.content.encode("utf-8") if isinstance(m.content, str) else m.content
    body = body_field(data, content_type=None, max_bytes=ex.max_body_bytes, secrets=ex.secrets)
    return {
        "direction": m.direction,
        "time": iso_timestamp(m.time),
        "action": m.action,
        "content": body,
    }


def connect_record(ex: Exchange, status: int = 403) -> dict:
    """The record of a refused CONNECT: no request was ever decrypted, so no http.request."""
    record = _base(ex)
    record["http"] = {"request": {"method": "CONNECT"}, "response": {"status_code": status}}
    return _finish(record, ex)


def tunnel_record(ex: Exchange, *, bytes_up: int, bytes_down: int) -> dict:
    """The record of a TLS passthrough tunnel: not decrypted, so only sizes and timing."""
    record = _base(ex)
    # ECS names bytes sent by the client `client.bytes` and by the server `destination.bytes`.
    record.setdefault("client", {})["bytes"] = bytes_up
    record.setdefault("destination", {})["bytes"] = bytes_down
    record["network"] = {"transport": "tcp", "type": "tls-passthrough"}
    return _finish(record, ex)


def error_record(item, error: Exception, now: float) -> dict:
    """Stands in for a record that could not be built or encoded, so the flow still leaves a
    trace under its event.id."""
    flow_id = getattr(item, "flow_id", None)
    if isinstance(item, dict):
        flow_id = (item.get("event") or {}).get("id")
    return {
        "@timestamp": iso_timestamp(now),
        "event": {"id": flow_id, "action": "error", "reason": "log_record_error"},
        "error": {"message": f"{type(error).__name__}: {error}"},
    }
