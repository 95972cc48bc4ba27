"""Retry timing: per-scan exponential back-off with jitter, and a gate that pauses a whole endpoint.

Per-scan back-off alone would let thousands of pending scans each hammer an API that is down;
the gate makes one request probe the endpoint while the others wait, and opens for all on success.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

_MAX_RETRY_AFTER_S = 300.0


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1 = first retry): "equal jitter" exponential back-off.

    Half of the exponential step is fixed and half random, so delays grow reliably while clients
    that failed together spread out instead of retrying in lock-step.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    step = min(cap_s, base_s * (2 ** min(attempt - 1, 62)))
    return step / 2 + (rng or random).uniform(0, step / 2)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


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
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._closed = asyncio.Event()
        self._closed.set()
        self.generation = 0  # bumps on every state change; a request remembers the one it started in

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def acquire(self) -> int:
        """Wait until a request may be sent; returns the generation to pass back to success/failure."""
        while True:
            if self._closed.is_set():
                return self.generation
            wait = self._open_until - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not self._probing:
                self._probing = True
                return self.generation
            await self._closed.wait()

    def success(self, generation: int) -> None:
        del generation  # any success proves the endpoint is back
        if not self._closed.is_set() or self._failures:
            self._failures = 0
            self._probing = False
            self.generation += 1
            self._closed.set()

    def failure(self, generation: int, retry_after_s: float | None = None) -> None:
        if generation != self.generation:
            return  # started before the last change of state: says nothing new
        self._failures += 1
        delay = backoff_delay(self._failures, base_s=self._base_s, cap_s=self._cap_s, rng=self._rng)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        self._open_until = self._clock() + delay
        self._probing = False
        self.generation += 1
        self._closed.clear()
