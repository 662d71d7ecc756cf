"""Fail closed: one guard around every Clearwall hook.

mitmproxy catches an exception raised in a hook, logs it, and carries on with the flow
uninspected. Every Clearwall hook is therefore wrapped: an exception refuses the flow with
`inspection_error` (502) and is logged with its traceback in Clearwall's own log — never a
silent forward. `hook_names()` lists what a class implements so a test can check each against
mitmproxy's hook registry (a misspelled hook is never called and nothing warns).
"""

from __future__ import annotations

import functools
import inspect
import logging

from mitmproxy import http

from clearwall.mitm import respond

log = logging.getLogger("clearwall")
GUARDED = "__clearwall_guarded__"


def _fail(hook: str, obj: object) -> None:
    log.exception("inspection error in %s; refusing the flow", hook)
    try:
        if isinstance(obj, http.HTTPFlow):
            if obj.websocket is not None and obj.websocket.messages and hook == "websocket_message":
                obj.websocket.messages[-1].drop()  # killing the flow alone would still forward it
                from clearwall.mitm.websocket import close_1008

                close_1008(obj, "inspection error")
            elif obj.response is not None and hook == "responseheaders":
                # The body is still to come: mitmproxy would read it into the refusal and send it.
                respond.inspection_error(obj, hook, at_headers=True)
            elif obj.response is not None and hook == "response" and obj.response.stream:
                obj.kill()  # headers may be gone already; cutting the connection is the only refusal left
            else:
                respond.inspection_error(obj, hook)
        elif hasattr(obj, "server") and hasattr(obj.server, "error"):  # server_connect
            obj.server.error = f"clearwall: inspection error in {hook}"
        elif hasattr(obj, "kill"):
            obj.kill()
        elif hasattr(obj, "context"):  # tls hooks: close the client side
            obj.context.client.error = f"clearwall: inspection error in {hook}"
    except Exception:  # the guard must never raise itself
        log.exception("could not refuse after inspection error in %s", hook)


def guarded(fn):
    """Decorate a hook method (sync or async) so that any exception refuses its flow."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(self, obj, *args):
            try:
                return await fn(self, obj, *args)
            except Exception:
                _fail(fn.__name__, obj)
    else:
        @functools.wraps(fn)
        def wrapper(self, obj, *args):
            try:
                return fn(self, obj, *args)
            except Exception:
                _fail(fn.__name__, obj)
    setattr(wrapper, GUARDED, True)
    return wrapper


LIFECYCLE = {"load", "configure", "running", "done"}  # not per-flow: errors there stop start-up


def hook_names(addon: object) -> set[str]:
    """Public callables of an addon, which mitmproxy would treat as hooks if the names match."""
    return {n for n in dir(type(addon)) if not n.startswith("_") and callable(getattr(type(addon), n))}
