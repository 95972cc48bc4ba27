"""When to write: a batch is due when it is full, when its oldest item has waited long enough, or
early, once it holds enough items to be worth a commit and the commit budget allows one.

Pure (the caller passes the clock), so the trade-off it encodes is unit-tested exactly: under load
batches fill up and the cost of a commit is shared by many scans; under light load no scan waits
longer than ``max_delay_s`` for its commit. In between (about 1,000 scans/s), waiting for the
delay would only add latency: a batch of ``early_size`` already divides the commits by that many,
so it goes as soon as ``min_interval_s`` has passed since the last write. The interval keeps high
rates on full batches: there a batch fills to ``max_size`` before the interval is over.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Trigger = Literal["size", "delay", "early"]


class Batcher(Generic[T]):
    """A FIFO of items with their arrival times, released in batches of at most ``max_size``."""

    def __init__(
        self, max_size: int, max_delay_s: float, *, early_size: int = 0, min_interval_s: float = 0.0
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_delay_s < 0:
            raise ValueError("max_delay_s must not be negative")
        if early_size < 0 or min_interval_s < 0:
            raise ValueError("early_size and min_interval_s must not be negative")
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.early_size = early_size  # 0: no early write
        self.min_interval_s = min_interval_s
        self._items: deque[tuple[float, T]] = deque()
        self._last_take = -math.inf

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Iterable[T], now: float) -> None:
        """Items that arrived at ``now`` (a monotonic clock reading)."""
        self._items.extend((now, item) for item in items)

    def room(self) -> int:
        """How many more items fit before the batch is full (0 when it already is)."""
        return max(0, self.max_size - len(self._items))

    def trigger(self, now: float) -> Trigger | None:
        """Why the batch is due now, or None while it is not."""
        if not self._items:
            return None
        if len(self._items) >= self.max_size:
            return "size"
        if now >= self._items[0][0] + self.max_delay_s:
            return "delay"
        if self._early_due(now):
            return "early"
        return None

    def _early_due(self, now: float) -> bool:
        return 0 < self.early_size <= len(self._items) and now >= self._last_take + self.min_interval_s

    def wait_s(self, now: float) -> float | None:
        """Seconds until the oldest item's deadline (0 when due); None when empty (nothing to wait for)."""
        if not self._items:
            return None
        if len(self._items) >= self.max_size or self._early_due(now):
            return 0.0
        deadline = self._items[0][0] + self.max_delay_s
        if 0 < self.early_size <= len(self._items):
            deadline = min(deadline, self._last_take + self.min_interval_s)
        return max(0.0, deadline - now)

    def take(self, now: float | None = None) -> list[T]:
        """The oldest ``max_size`` items; the rest keep their arrival times for the next batch.

        ``now`` starts the interval before the next early write (a write that is not timed, e.g. a
        drain, leaves it alone)."""
        if now is not None:
            self._last_take = now
        count = min(self.max_size, len(self._items))
        return [self._items.popleft()[1] for _ in range(count)]

    def take_all(self) -> list[T]:
        """Everything, for a final drain."""
        items = [item for _, item in self._items]
        self._items.clear()
        return items


def read_count(room: int, streams: int) -> int:
    """XREADGROUP's COUNT applies per stream: ask each shard for its share of the room left."""
    return max(1, math.ceil(room / max(1, streams)))
