"""Loaded with `mitmdump -s` after Clearwall's script: makes a response-headers hook raise.

At that point mitmproxy has not read the upstream body yet; the guard's refusal must not be
filled with it afterwards and forwarded.
"""

import clearwall.mitm.streams as streams


def _explode(*args, **kwargs):
    raise RuntimeError("injected fault at response headers")


streams.media_type = _explode
