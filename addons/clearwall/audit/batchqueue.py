"""A bounded FIFO between many producers and one consumer that takes items in batches.

`queue.Queue` takes its lock and signals a condition for every item on both sides; the log
writer drains hundreds of records at a time, so here one lock round trip moves a whole batch,
and a producer signals only when the queue was empty (the only time the consumer waits).
"""

from __future__ import annotations

import threading
import time
from collections import deque


class Full(Exception):
    """The queue holds maxsize items."""


class BatchQueue:
    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize}")
        self.maxsize = maxsize
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item, *, force: bool = False) -> None:
        """Append item; raise Full when the queue holds maxsize items, unless force (used for
        the one stop marker, which must get in even behind a full queue)."""
        with self._lock:
            items = self._items
            if len(items) >= self.maxsize and not force:
                raise Full
            items.append(item)
            if len(items) == 1:
                self._nonempty.notify()

    def get_batch(self, max_items: int, timeout: float) -> list:
        """Up to max_items items in FIFO order, waiting at most timeout seconds for the first;
        an empty list when none arrived."""
        with self._lock:
            items = self._items
            if not items:
                deadline = time.monotonic() + timeout
                while not items:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._nonempty.wait(left)
            if len(items) <= max_items:
                batch = list(items)
                items.clear()
                return batch
            return [items.popleft() for _ in range(max_items)]
