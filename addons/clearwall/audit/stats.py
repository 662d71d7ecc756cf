"""Counts over log records for `clearwall logs stats`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from clearwall.audit.reader import get


@dataclass
class Stats:
    records: int = 0
    first: str | None = None
    last: str | None = None
    actions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    auth_failures: int = 0
    upstream_errors: int = 0
    rules: Counter = field(default_factory=Counter)
    clients: Counter = field(default_factory=Counter)
    hosts: Counter = field(default_factory=Counter)

    def add(self, record: dict) -> None:
        self.records += 1
        ts = record.get("@timestamp")
        if isinstance(ts, str):
            self.first = ts if self.first is None or ts < self.first else self.first
            self.last = ts if self.last is None or ts > self.last else self.last
        action = get(record, "event.action") or "unknown"
        self.actions[action] += 1
        reason = get(record, "event.reason")
        if reason:
            self.reasons[reason] += 1
        if reason == "auth_required":
            self.auth_failures += 1
        status = get(record, "http.response.status_code")
        if action == "error" or (isinstance(status, int) and status >= 502):
            self.upstream_errors += 1
        for rule in get(record, "rule.name") or []:
            self.rules[rule] += 1
        client = get(record, "labels.client") or get(record, "client.user.name") or get(record, "client.ip")
        self.clients[client or "unknown"] += 1
        host = get(record, "destination.domain") or get(record, "destination.ip")
        self.hosts[host or "unknown"] += 1

    def as_dict(self, top: int = 10) -> dict:
        return {
            "records": self.records,
            "first": self.first,
            "last": self.last,
            "blocked": self.actions["blocked"],
            "would_block": self.actions["would_block"],
            "rate_limited": self.actions["rate_limited"],
            "redacted": self.actions["redacted"],
            "allowed": self.actions["allowed"],
            "errors": self.actions["error"],
            "auth_failures": self.auth_failures,
            "upstream_errors": self.upstream_errors,
            "reasons": dict(self.reasons.most_common()),
            "top_rules": self.rules.most_common(top),
            "top_clients": self.clients.most_common(top),
            "top_hosts": self.hosts.most_common(top),
        }


def compute(records: Iterable[dict]) -> Stats:
    stats = Stats()
    for record in records:
        stats.add(record)
    return stats
