"""A bounded FIFO between many producers and one consumer that takes items in batches.

`queue.Queue` takes its lock and signals a condition for every item on both sides; the log
writer drains hundreds of records at a time, so here one lock round trip moves a whole batch,
and a producer signals only when the queue was empty (the only time the consumer waits).
The queue is bounded in items and in weight (the body bytes queued records keep alive),
both checked under the one lock a put takes.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class Full(Exception):
    """The queue holds maxsize items."""


class Heavy(Exception):
    """The queue's weight would pass max_weight."""


class BatchQueue:
    def __init__(self, maxsize: int, max_weight: int | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize}")
        if max_weight is not None and max_weight < 1:
            raise ValueError(f"max_weight must be >= 1 or None, not {max_weight}")
        self.maxsize = maxsize
        self.max_weight = max_weight
        self.weight = 0  # total weight of the queued items
        self._items: deque = deque()
        self._weights: deque[int] = deque()  # of the items, in the same order
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item, weight: int = 0, *, force: bool = False) -> None:
        """Append item; raise Full when the queue holds maxsize items, Heavy when its weight
        would pass max_weight, unless force (used for the one stop marker, which must get in
        even behind a full queue). One item is accepted into an empty queue whatever its
        weight, or it never could be."""
        with self._lock:
            items = self._items
            if not force:
                if len(items) >= self.maxsize:
                    raise Full
                if self.max_weight is not None and self.weight and self.weight + weight > self.max_weight:
                    raise Heavy
            items.append(item)
            self._weights.append(weight)
            self.weight += weight
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
            weights = self._weights
            if len(items) <= max_items:
                batch = list(items)
                items.clear()
                self.weight -= sum(weights)
                weights.clear()
            else:
                batch = [items.popleft() for _ in range(max_items)]
                self.weight -= sum([weights.popleft() for _ in range(max_items)])
            return batch
