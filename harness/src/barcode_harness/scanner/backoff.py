"""Retry timing for scanners: Retry-After parsing, and a gate that pauses a whole endpoint.

Per-scan back-off alone would let thousands of pending scans each hammer an API that is down: the
gate makes one request probe the endpoint while the others wait, and opens for all on success.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

from barcode_pipeline.retry import backoff_delay

_MAX_RETRY_AFTER_S = 300.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value.strip()).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError):
            return None
    return None if math.isnan(seconds) else min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


class EndpointGate:
    """A small circuit breaker for one endpoint, for asyncio tasks.

    Closed: every request passes. A retryable failure opens it for a back-off (at least the
    server's Retry-After); then exactly one request probes; its success closes the gate, its
    failure reopens it for a longer back-off. Failures of requests that were already in flight
    when it opened do not lengthen the back-off.
    """

    def __init__(
        self,
        *,
        base_s: float,
        cap_s: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_s = base_s
        self._cap_s = cap_s
        self._rng = rng or random.Random()
        self._clock = clock
        self.failures = 0  # retryable failures in a row; none = closed
        self._open_until = 0.0
        self._probe: int | None = None  # generation handed to the probing request
        self._changed = asyncio.Event()
        self.generation = 0  # bumps on every change of state; a request remembers the one it started in

    @property
    def is_closed(self) -> bool:
        return not self.failures

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(self) -> int:
        """Wait until a request may be sent; returns the generation to pass to failure/abandon."""
        while not self.is_closed:
            wait = self._open_until - self._clock()
            if wait <= 0 and self._probe is None:
                self._probe = self.generation
                break
            with contextlib.suppress(TimeoutError):  # a change of state, or the back-off's end
                await asyncio.wait_for(self._changed.wait(), timeout=wait if wait > 0 else None)
        return self.generation

    def delay(self, attempt: int) -> float:
        """The back-off before ``attempt`` (1 = the first retry), for the endpoint or one scan."""
        return backoff_delay(attempt, base_s=self._base_s, cap_s=self._cap_s, rng=self._rng)

    def success(self) -> bool:
        """The endpoint answered, whenever the request started: it is back. True if that is news."""
        if self.is_closed:
            return False
        self.failures = 0
        self._probe = None
        self._bump()
        return True

    def failure(self, generation: int, retry_after_s: float | None = None) -> None:
        """A retryable failure (connection error, timeout, 408/429/5xx)."""
        if generation != self.generation:
            return  # started before the last change of state: says nothing new
        self.failures += 1
        self._open_until = self._clock() + max(self.delay(self.failures), retry_after_s or 0.0)
        self._probe = None
        self._bump()

    def abandon(self, generation: int) -> None:
        """The request given ``generation`` was not sent after all (shutdown): let another probe."""
        if self._probe is not None and self._probe == generation == self.generation:
            self._probe = None
            self._bump()
