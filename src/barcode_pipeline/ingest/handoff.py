"""Results from librdkafka's threads to the event loop, one wake-up per burst instead of one per scan.

``call_soon_threadsafe`` wakes the event loop every time it is called. Delivery reports arrive in
bursts (one produce response confirms every message it carried), so a report that finds a drain
already scheduled only joins the queue; the loop then settles the whole burst in one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Handoff:
    """A queue from any thread to one event loop, drained on the loop.

    Correctness rests on the order of two steps on each side (the GIL makes each step atomic):
    ``put`` appends before it looks at the flag, and ``_drain`` clears the flag before it empties
    the queue, so an item is always either seen by a running drain or schedules a new one. A
    second, empty drain is the worst case.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._scheduled = False

    def put(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon; callable from any thread."""
        self._items.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            # RuntimeError: the loop closed during shutdown, so nobody awaits these results any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception:  # one bad result must not strand the others in the queue
                log.exception("settling a Kafka delivery report failed")
