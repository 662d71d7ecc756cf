"""Loaded with `mitmdump -s` after Clearwall's script: makes WebSocket message inspection raise."""

import clearwall.mitm.websocket as websocket


def _explode(*args, **kwargs):
    raise RuntimeError("injected websocket fault")


websocket.inspect_text = _explode
