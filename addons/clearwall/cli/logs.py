"""`clearwall logs` (placeholder until its issue lands)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("logs", help="logs commands")
    p.set_defaults(func=lambda args: print("clearwall logs: not built yet") or 2)
