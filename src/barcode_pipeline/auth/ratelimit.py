"""Scans per second per key, held across every ingest process and host: counted in Redis, decided here.

The hot path never waits for Redis. Each process decides on its last view of a key's count plus what
it admitted since, and every ``SYNC_S`` a background task writes what it admitted into the key's
counter in Redis (its own field of a hash, ``HSET``: an absolute value, so a retried write or a lost
reply never counts a scan twice) and reads back what all processes admitted (Kong's rate-limiting
plugin makes the same trade with its ``sync_rate``). Between two syncs the other processes'
admissions are not seen yet, so a key can run ahead of its limit by what they admit in one interval
(at the very start of a quiet key, up to one window's worth per process); the next sync shows it and
every process then refuses until the key's average is back under its rate.

The count is a sliding-window estimate over fixed windows of ``window_s`` (Redis keeps one counter a
window): the previous window's count, weighted by how much of it still lies within the last
``window_s``, plus the current one. A quiet key may send ``rate x window_s`` scans at once.

A request is admitted while its key is under the limit and then charged all its scans, so a batch is
never refused for being larger than what is left; the key's next requests wait for it instead. A key
already over its limit is refused before its body is read; scans Kafka did not take are refunded.

Without Redis each process counts only its own scans (the limit then holds per process) and scans
keep flowing: a rate limit must not turn a Redis outage into an ingest outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
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
    """One key's scans in one window as this process sees them."""

    window: int = -1  # the window (time // window_s) the counts below belong to
    own: int = 0  # what this process admitted in it
    others: int = 0  # what the other processes had admitted in it at the last sync
    previous: float = 0.0  # the previous window's total, every process's


@dataclass(frozen=True, slots=True)
class Delta:
    """One key's count for one window, as this process writes it (absolute: a repeat is harmless)."""

    name: str
    window: int
    own: int
    read: bool  # False: a window that has ended, written late; nothing to read back


class RateLimiter:
    """Per-key sliding-window limits: :meth:`take` on the hot path, a task started by :meth:`start` syncs.

    Each process writes its own count into one field of the window's hash in Redis (``HSET``, an
    absolute value): a repeated or retried write, or a reply lost on the way back, cannot count a
    scan twice, and the total is the sum of the fields (``HVALS``)."""

    def __init__(
        self,
        window_s: float,
        connect: Callable[[], Any] | None = None,
        *,
        on_sync: Callable[[bool], None] | None = None,
    ) -> None:
        self.window_s = window_s
        self._connect = connect  # a Redis client factory; None counts this process only
        self._on_sync = on_sync  # told after each sync whether it reached Redis (a gauge)
        self._client: Any = None
        self._me = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._counts: dict[str, Count] = {}
        self._late: dict[tuple[str, int], int] = {}  # (key, ended window) -> own count, not yet written
        self.shared = False  # the last sync reached Redis
        self._logged = -_LOG_EVERY_S
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ the hot path
    def take(self, name: str, rate: float, scans: int, now: float | None = None) -> float:
        """Charge ``scans`` to ``name`` and return 0, or return the seconds until it is under its limit.
        ``scans=0`` only asks (a request refused before its body is read)."""
        count, into = self._current(name, now)
        limit = rate * self.window_s
        current = count.others + count.own
        estimate = count.previous * (1 - into / self.window_s) + current
        if estimate >= limit:
            return self._wait(count.previous, current, limit, into)
        count.own += scans
        return 0.0

    def refund(self, name: str, scans: int) -> None:
        """Give back scans charged for a request that sent them nowhere (Kafka refused or timed out):
        the scanner resends them, and a Kafka outage must not cost it its rate."""
        count = self._counts.get(name)
        if count is not None:
            count.own = max(0, count.own - scans)

    def _current(self, name: str, now: float | None) -> tuple[Count, float]:
        now = time.time() if now is None else now  # wall clock: every host must agree on the windows
        window, into = divmod(now, self.window_s)
        count = self._counts.get(name)
        if count is None:
            count = self._counts[name] = Count()
        if count.window != window:
            self._roll(name, count, int(window))
        return count, into

    def _wait(self, previous: float, current: float, limit: float, into: float) -> float:
        """Seconds until the estimate is under ``limit``: the previous window's weight fades during
        this one; if this one alone is over, its weight must fade during the next."""
        w = self.window_s
        if current < limit:
            return w * (1 - (limit - current) / previous) - into + 1e-3
        return (w - into) + w * (1 - limit / current) + 1e-3

    def _roll(self, name: str, count: Count, window: int) -> None:
        """Start ``window``: the current counts become the previous ones (if it follows directly)."""
        if count.window >= 0:  # its final count, written once more (a refund may have lowered it)
            self._late[(name, count.window)] = count.own
        total = count.others + count.own
        count.previous = total if window == count.window + 1 else 0.0
        count.window, count.own, count.others = window, 0, 0

    # ------------------------------------------------------------------ the sync
    def snapshot(self, now: float) -> list[Delta]:
        """What to write now: every key's own count and the ended windows' not yet written. Keys
        idle for two windows are forgotten (their counts have no weight left)."""
        current = int(now // self.window_s)
        deltas = [Delta(n, w, own, read=False) for (n, w), own in self._late.items() if w >= current - 1]
        self._late.clear()
        for name, count in list(self._counts.items()):
            if count.window < current - 1:
                del self._counts[name]
                continue
            deltas.append(Delta(name, count.window, count.own, read=True))
        return deltas

    def apply(self, deltas: list[Delta], totals: list[tuple[int, int]] | None) -> None:
        """Take in Redis's answer: (window total, previous window total) per read delta, totals that
        include this process's written counts; None when Redis could not be reached (the late
        writes are kept for the next sync)."""
        if totals is None:
            for d in deltas:
                if not d.read:
                    self._late[(d.name, d.window)] = max(d.own, self._late.get((d.name, d.window), 0))
            return
        for delta, (total, previous) in zip([d for d in deltas if d.read], totals, strict=True):
            count = self._counts.get(delta.name)
            if count is None:
                continue
            if count.window == delta.window:
                count.others = max(0, total - delta.own)
                count.previous = max(count.previous, float(previous))
            elif count.window == delta.window + 1:  # the window ended meanwhile: it is the previous one
                own_then = self._late.get((delta.name, delta.window), delta.own)
                count.previous = max(count.previous, float(total - delta.own + own_then))

    def exchange(self, deltas: list[Delta]) -> list[tuple[int, int]]:
        """Write the counts and read the totals back: one round trip, run in a thread."""
        if self._client is None:
            assert self._connect is not None
            self._client = self._connect()
        ttl_ms = int(self.window_s * 3000)  # the current and the previous window are read
        pipe = self._client.pipeline(transaction=False)
        for d in deltas:
            key = names.rate_limit_key(d.name, d.window)
            pipe.hset(key, self._me, d.own)  # even 0: a refund may have lowered what was written
            pipe.pexpire(key, ttl_ms)
            if d.read:
                pipe.hvals(key)
                pipe.hvals(names.rate_limit_key(d.name, d.window - 1))
        replies = iter(pipe.execute())
        totals = []
        for d in deltas:
            next(replies), next(replies)  # HSET's and PEXPIRE's answers
            if d.read:
                totals.append((_sum(next(replies)), _sum(next(replies))))
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
                self._note(exc)
        self.shared = totals is not None
        if self._on_sync is not None:
            self._on_sync(self.shared)
        self.apply(deltas, totals)

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(SYNC_S)
            await self.sync()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Let the sync under way finish (one thread talks to Redis at a time), then write the last
        counts: what this process admitted last still counts for the others."""
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.sync()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def _note(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged >= _LOG_EVERY_S:
            self._logged = now
            log.warning("rate limits are counted per process: cannot reach Redis (%s)", exc)


def _sum(values: Any) -> int:
    return sum(int(v) for v in values or ())


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
