"""Event-loop futures woken from the writer thread when the queue has room again."""

from __future__ import annotations

import asyncio
import threading


class Waiters:
    def __init__(self) -> None:
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._lock = threading.Lock()

    def add(self) -> asyncio.Future:
        """A future of the running loop, resolved at the next wake_all()."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._waiting.append((loop, fut))
        return fut

    def wake_all(self) -> None:
        """Resolve every waiting future (from any thread)."""
        if not self._waiting:  # the common case, without taking the lock
            return
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for loop, fut in waiting:
            try:
                loop.call_soon_threadsafe(_set_done, fut)
            except RuntimeError:  # loop closed: nobody is waiting any more
                pass


def _set_done(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
