"""Per-flow and per-connection state the Clearwall addons share.

The addons communicate only through `flow.metadata["clearwall"]` (a FlowState) and the
per-connection identities kept in `Connections`, so each addon stays small and ordered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from clearwall.policy.clients import Identity
from clearwall.policy.decision import Decision, Refusal
from clearwall.policy.ruleset import RuleSet

KEY = "clearwall"


@dataclass
class FlowState:
    rules: RuleSet | None = None  # the rules this flow started with (reloads do not change it)
    identity: Identity | None = None
    decision: Decision | None = None
    refusal: Refusal | None = None  # set when Clearwall answered the flow itself
    would_block: list[Refusal] = field(default_factory=list)
    matches: list[dict[str, str]] = field(default_factory=list)  # {rule, where, action}; never the text
    redacted: bool = False
    connect_host: str | None = None
    resolved_ip: str | None = None
    mcp_request_id: Any = None
    mcp: dict[str, Any] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set, repr=False)  # values that must not reach the log
    # Streamed responses (SSE, large bodies): what the client received, kept bounded for the log
    # (a streams.StreamLog: first max_body_bytes, whole length and sha256). None when buffered.
    stream_log: Any = None
    ws_messages: list[Any] = field(default_factory=list)  # audit.record.Message per WebSocket message
    ws_closing: bool = False  # a blocked WebSocket message is closing the connection with 1008
    started: float = field(default_factory=time.time)
    logged: bool = False


def flow_state(flow) -> FlowState:
    st = flow.metadata.get(KEY)
    if st is None:
        st = flow.metadata[KEY] = FlowState()
    return st


@dataclass
class Tunnel:
    """What the CONNECT established, for the requests that follow inside it."""

    host: str
    port: int
    identity: Identity
    rules: RuleSet  # the rules the CONNECT was decided with (passthrough relays keep them)
    # Kept in memory only, so requests inside the tunnel can be re-identified after a reload.
    proxy_authorization: str | None = field(default=None, repr=False)
