"""Retrying a call to a server that is away: one back-off rule for the processor and the workers.

"Equal jitter" exponential back-off: half of each step is fixed and half random, so delays grow
reliably while processes that failed together spread out instead of retrying in lock-step.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from barcode_pipeline.errors import RetriesExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")
_RNG = random.Random()


def backoff_delay(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (1 = first retry)."""
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    step = min(cap_s, math.ldexp(base_s, min(attempt - 1, 62)))
    return step / 2 + (rng or _RNG).uniform(0, step / 2)


@dataclass(frozen=True)
class Backoff:
    """How a service waits between attempts; ``budget`` says how long it may still retry.

    ``budget`` returns the seconds left (``None``: no limit, e.g. until the service is told to stop);
    at 0 or less the call gives up with :class:`RetriesExhausted`, keeping its work for a restart.
    """

    base_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, base_s=self.base_s, cap_s=self.cap_s)

    def call(
        self,
        what: str,
        action: Callable[[], T],
        *,
        errors: tuple[type[Exception], ...],
        sleep: Callable[[float], object],
        budget: Callable[[], float | None] = lambda: None,
        on_error: Callable[[Exception], object] | None = None,
        on_attempt: Callable[[], object] | None = None,
        component: str | None = None,
    ) -> T:
        """Run ``action`` until it succeeds; ``errors`` are retried, anything else propagates."""
        attempt = 0
        while True:
            if on_attempt is not None:
                on_attempt()
            try:
                return action()
            except errors as exc:
                attempt += 1
                if on_error is not None:
                    on_error(exc)
                remaining = budget()
                if remaining is not None and remaining <= 0:
                    raise RetriesExhausted(f"{what}: {exc}", component=component) from exc
                delay = self.delay(attempt)
                if remaining is not None:
                    delay = min(delay, remaining)
                log.warning("%s failed (attempt %d): %s; retrying in %.2fs", what, attempt, exc, delay)
                sleep(delay)
