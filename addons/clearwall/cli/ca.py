"""`clearwall ca` (placeholder until its issue lands)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("ca", help="ca commands")
    p.set_defaults(func=lambda args: print("clearwall ca: not built yet") or 2)
