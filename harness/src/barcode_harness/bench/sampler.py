"""A value sampled on a thread while a run lasts: the charts' and the growth checks' series."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, Self, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Sampler(Generic[T]):
    """Calls ``take`` every ``interval_s`` on a thread while entered; waits ``join_s`` for the last one."""

    def __init__(self, take: Callable[[], T], interval_s: float = 1.0, *, join_s: float = 30.0) -> None:
        self._take = take
        self.interval_s = interval_s
        self._join_s = join_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self.samples: list[T] = []

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._join_s)

    def _run(self) -> None:
        while True:
            t = time.time()
            try:
                self.samples.append(self._take())
            except Exception as exc:  # a missed sample is a gap in a chart, not a failed run
                log.warning("%s sample failed: %s", type(self).__name__, exc)
            if self._stop.wait(max(0.0, self.interval_s - (time.time() - t))):
                return
