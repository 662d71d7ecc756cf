"""Loaded with `mitmdump -s` after Clearwall's script: makes the destination decision raise.

Proves the fail-closed guard end to end: an exception inside a Clearwall hook must refuse the
flow with inspection_error, never forward it uninspected.
"""

import clearwall.mitm.access as access


def _explode(*args, **kwargs):
    raise RuntimeError("injected fault")


access.decide = _explode
