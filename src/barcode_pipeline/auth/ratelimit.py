"""Scans per second per key, held across every ingest process and host: counted in Redis, decided here.

The hot path never waits for Redis. Each process decides on its last view of a key's count plus what
it admitted since, and every ``SYNC_S`` a background task adds what it admitted to the key's counter
in Redis (``INCRBY``) and reads back what all processes admitted (Kong's rate-limiting plugin makes
the same trade with its ``sync_rate``). Between two syncs the other processes' admissions are not
seen yet, so a key can run ahead of its limit by what they admit in one interval; the next sync shows
it and every process then refuses until the key's average is back under its rate.

The count is a sliding-window estimate over fixed windows of ``window_s`` (Redis keeps one counter a
window): the previous window's count, weighted by how much of it still lies within the last
``window_s``, plus the current one. A quiet key may send ``rate x window_s`` scans at once.

A request is admitted while its key is under the limit and then charged all its scans, so a batch is
never refused for being larger than what is left; the key's next requests wait for it instead.

Without Redis each process counts only its own scans (the limit then holds per process) and scans
keep flowing: a rate limit must not turn a Redis outage into an ingest outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from barcode_pipeline import names

log = logging.getLogger(__name__)

SYNC_S = 0.1  # how stale a process's view of the other processes' counts may be
_LOG_EVERY_S = 10.0


@dataclass(slots=True)
class Count:
    """One key's scans as this process sees them."""

    window: int = -1  # the window (time // window_s) the counts below belong to
    shared: int = 0  # every process's scans in it, as Redis said at the last sync (ours included)
    previous: int = 0  # the previous window's, every process's
    unsent: int = 0  # ours in it, not yet added in Redis
    sending: int = 0  # ours in it, being added right now


@dataclass(frozen=True, slots=True)
class Delta:
    """What one sync adds for one key and window, and whether the answer updates the view."""

    name: str
    window: int
    scans: int
    read: bool  # False: an old window's scans, added late; nothing to read back


class RateLimiter:
    """Per-key sliding-window limits: :meth:`take` on the hot path, a task started by :meth:`start` syncs."""

    def __init__(self, window_s: float, connect: Callable[[], Any] | None = None) -> None:
        self.window_s = window_s
        self._connect = connect  # a Redis client factory; None counts this process only
        self._client: Any = None
        self._counts: dict[str, Count] = {}
        self._late: list[Delta] = []  # scans of a window that ended before they were added
        self.shared = False  # the last sync reached Redis
        self._logged = -_LOG_EVERY_S
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the hot path
    def take(self, name: str, rate: float, scans: int, now: float | None = None) -> float:
        """Charge ``scans`` to ``name`` and return 0, or return the seconds until it is under its limit."""
        now = time.time() if now is None else now  # wall clock: every host must agree on the windows
        window, into = divmod(now, self.window_s)
        count = self._counts.get(name)
        if count is None:
            count = self._counts[name] = Count()
        if count.window != window:
            self._roll(name, count, int(window))
        limit = rate * self.window_s
        current = count.shared + count.unsent + count.sending
        estimate = count.previous * (1 - into / self.window_s) + current
        if estimate >= limit:
            return self._wait(count.previous, current, limit, into)
        count.unsent += scans
        return 0.0

    def _wait(self, previous: float, current: float, limit: float, into: float) -> float:
        """Seconds until the estimate is under ``limit``: the previous window's weight fades during
        this one; if this one alone is over, its weight must fade during the next."""
        w = self.window_s
        if current < limit:
            return w * (1 - (limit - current) / previous) - into + 1e-3
        return (w - into) + w * (1 - limit / current) + 1e-3

    def _roll(self, name: str, count: Count, window: int) -> None:
        """Start ``window``: the current counts become the previous ones (if it follows directly)."""
        if count.unsent:
            self._late.append(Delta(name, count.window, count.unsent, read=False))
        mine = count.shared + count.unsent + count.sending
        count.previous = mine if window == count.window + 1 else 0
        count.window, count.shared, count.unsent = window, 0, 0

    # ------------------------------------------------------------------ the sync
    def snapshot(self, now: float) -> list[Delta]:
        """What to send now: every key's unsent scans (moved to ``sending``) and the late ones.

        Keys idle for two windows are forgotten (their counts have no weight left)."""
        current = int(now // self.window_s)
        deltas = [d for d in self._late if d.window >= current - 1]  # older ones no longer count
        self._late = []
        for name, count in list(self._counts.items()):
            if count.window < current - 1 and not count.unsent and not count.sending:
                del self._counts[name]
                continue
            deltas.append(Delta(name, count.window, count.unsent, read=True))
            count.sending, count.unsent = count.sending + count.unsent, 0
        return deltas

    def apply(self, deltas: list[Delta], totals: list[tuple[int, int]] | None) -> None:
        """Take in Redis's answer: (window total, previous window total) per read delta; None when
        Redis could not be reached, and the scans go back to being unsent."""
        read = [d for d in deltas if d.read]
        for index, delta in enumerate(read):
            count = self._counts.get(delta.name)
            if count is None:
                continue
            count.sending -= delta.scans
            if totals is None:
                if count.window == delta.window:
                    count.unsent += delta.scans
                elif delta.scans:
                    self._late.append(Delta(delta.name, delta.window, delta.scans, read=False))
                continue
            total, previous = totals[index]
            if count.window == delta.window:
                count.shared, count.previous = total, max(count.previous, previous)
            elif count.window == delta.window + 1:
                count.previous = max(count.previous, total)
        if totals is None:
            self._late.extend(d for d in deltas if not d.read and d.scans)

    def exchange(self, deltas: list[Delta]) -> list[tuple[int, int]]:
        """Add the deltas in Redis and read the totals back: one round trip, run in a thread."""
        if self._client is None:
            assert self._connect is not None
            self._client = self._connect()
        ttl_ms = int(self.window_s * 3000)  # the current and the previous window are read
        pipe = self._client.pipeline(transaction=False)
        for d in deltas:
            key = names.rate_limit_key(d.name, d.window)
            if d.scans:
                pipe.incrby(key, d.scans)
                pipe.pexpire(key, ttl_ms)
            else:
                pipe.get(key)
            if d.read:
                pipe.get(names.rate_limit_key(d.name, d.window - 1))
        replies = iter(pipe.execute())
        totals = []
        for d in deltas:
            total = int(next(replies) or 0)
            if d.scans:
                next(replies)  # PEXPIRE's answer
            if d.read:
                totals.append((total, int(next(replies) or 0)))
        return totals

    async def sync(self) -> None:
        """One sync: on the event loop around one Redis round trip in a thread."""
        deltas = self.snapshot(time.time())
        if not deltas:
            return
        totals: list[tuple[int, int]] | None = None
        if self._connect is not None:
            try:
                totals = await asyncio.to_thread(self.exchange, deltas)
            except Exception as exc:  # any: the limit goes on per process, never stops the ingest
                self._client = None
                self._note(exc)
        self.shared = totals is not None
        self.apply(deltas, totals)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            await self.sync()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.sync()  # what this process admitted last still counts for the others

    def _note(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY_S:
            self._logged = now
            log.warning("rate limits are counted per process: cannot reach Redis (%s)", exc)


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
