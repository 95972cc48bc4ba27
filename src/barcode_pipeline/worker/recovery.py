"""Liveness and recovery: heartbeats, and taking over a dead worker's entries; idle claims.

Redis Streams only knows how long an entry has been idle, not whether its consumer still lives, so
a plain idle-time sweep must choose between slow recovery and stealing from live workers. Each
worker therefore keeps a short-TTL heartbeat key; a consumer whose key has expired is dead and its
entries are claimed at once, while a live consumer's entries are only claimed after
``claim_min_idle_ms`` (it may be slow, or stuck in a way its heartbeat thread cannot see).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters.redis import lua_source
from barcode_pipeline.worker import metrics
from barcode_pipeline.worker.entries import Entry, from_items, text

log = logging.getLogger(__name__)


class Heartbeat:
    """Refreshes ``names.heartbeat_key(name)`` every ttl/3 from a thread, while the main loop progresses.

    A thread, so a long DB write cannot let the key expire; but it beats only while the main loop
    has reported progress within ``stall_limit_s``, so a worker wedged for good is declared dead
    and its entries are taken over.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        ttl_s: float,
        *,
        progress: Callable[[], float],
        stall_limit_s: float,
    ) -> None:
        self._client = client
        self.key = names.heartbeat_key(name)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._interval_s = ttl_s / 3
        self._progress = progress
        self._stall_limit_s = stall_limit_s
        self._value = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled = False

    def beat(self) -> None:
        """One refresh; raises ``redis.RedisError`` (the caller decides whether that matters).

        A full Redis refuses the SET but not a PEXPIRE, which keeps the live key alive: otherwise a
        full Redis would make every worker look dead to the others, and they would take over each
        other's entries in a loop.
        """
        try:
            self._client.set(self.key, self._value, px=self._ttl_ms)
        except redis.OutOfMemoryError:
            if not self._client.pexpire(self.key, self._ttl_ms):
                raise

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.key}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            stalled_for = time.monotonic() - self._progress()
            if stalled_for > self._stall_limit_s:
                if not self._stalled:
                    log.error(
                        "main loop stalled for %.0fs; stopping heartbeats so others take over", stalled_for
                    )
                self._stalled = True
                continue
            if self._stalled:
                log.warning("main loop progressing again; heartbeats resumed")
                self._stalled = False
            try:
                self.beat()
            except redis.RedisError as exc:
                metrics.REDIS_FAILURES.inc()
                log.warning("heartbeat failed: %s", exc)

    def stop(self, *, delete: bool = True) -> None:
        """Stop beating; deleting the key tells the others at once that this consumer is gone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 5)
        if delete:
            try:
                self._client.delete(self.key)
            except redis.RedisError as exc:
                log.warning("could not delete heartbeat key (it expires by itself): %s", exc)


def ensure_groups(client: redis.Redis, streams: Iterable[str], group: str) -> None:
    """XGROUP CREATE ... 0 MKSTREAM on every shard; an existing group is left alone."""
    for stream in streams:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
            log.info("created consumer group %s on %s", group, stream)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


class Recovery:
    """Finds entries this worker should take over. All methods raise ``redis.RedisError`` to the caller."""

    def __init__(
        self,
        client: redis.Redis,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        heartbeat_ttl_s: float,
        claim_min_idle_ms: int,
        batch_size: int,
        max_delay_ms: int = 0,
    ) -> None:
        self._client = client
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        # A dead consumer's entries have been idle for at least 2/3 of the TTL when its key expires
        # (it beat at most ttl/3 before dying); requiring ttl/3 lets only the first of several
        # workers racing for them win, since a successful XCLAIM resets the idle time.
        self.dead_min_idle_ms = max(1, int(heartbeat_ttl_s * 1000 / 3))
        self.claim_min_idle_ms = claim_min_idle_ms
        # The loop is single-threaded: during a sweep this worker holds only entries read within the
        # batch delay, so an own entry idle much longer than that was orphaned (say, its XACK failed).
        self.own_orphan_ms = max(claim_min_idle_ms, max_delay_ms + 5000)
        self.batch_size = batch_size
        self._reap = client.register_script(lua_source("reap_consumer"))
        self.live_peers: set[str] = set()  # other consumers with a heartbeat, as of the last sweep

    # ------------------------------------------------------------------ own entries after a restart
    def own_pending(self, stream: str, after: str) -> list[Entry]:
        """Next entries of this consumer's own PEL after id ``after`` (XREADGROUP with an explicit id)."""
        reply: Any = self._client.xreadgroup(
            self.group, self.consumer, {stream: after}, count=self.batch_size
        )
        items = reply[0][1] if reply else []
        if not items:
            return []
        ids = [text(raw_id) for raw_id, _ in items]
        counts = self._deliveries(stream, ids[0], ids[-1], len(ids), consumer=self.consumer)
        entries = from_items(stream, items, counts)
        metrics.RECLAIMED.labels("own").inc(len(entries))
        return entries

    def _deliveries(self, stream: str, first: str, last: str, count: int, *, consumer: str) -> dict[str, int]:
        pending: Any = self._client.xpending_range(
            stream, self.group, min=first, max=last, count=count, consumername=consumer
        )
        return {text(p["message_id"]): int(p["times_delivered"]) for p in pending}

    # ------------------------------------------------------------------ periodic sweep
    def sweep(self) -> list[Entry]:
        """One pass over all shards: claim dead consumers' entries, then long-idle ones; reap the dead."""
        pipe = self._client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xinfo_consumers(stream, self.group)
        replies: list[Any] = pipe.execute()
        consumers: dict[str, dict[str, int]] = {}
        for stream, reply in zip(self.streams, replies, strict=True):
            owned = {text(c["name"]): int(c["pending"]) for c in reply}
            consumers[stream] = owned
            metrics.PENDING.labels(stream).set(sum(owned.values()))
        others = sorted({n for owned in consumers.values() for n in owned} - {self.consumer})
        dead = self._dead(others)
        self.live_peers = set(others) - dead
        claimed: list[Entry] = []
        for stream, owned in consumers.items():
            for name, pending in owned.items():
                if name not in dead:
                    continue
                if pending > 0:
                    got = self._claim_from(stream, name)
                    if got:
                        log.warning("took over %d entries of dead consumer %s on %s", len(got), name, stream)
                    claimed += got
                else:
                    self._forget(stream, name)
        if len(claimed) < self.batch_size:
            claimed += self._claim_idle(self.batch_size - len(claimed))
        return claimed

    def _dead(self, consumers: list[str]) -> set[str]:
        if not consumers:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for name in consumers:
            pipe.exists(names.heartbeat_key(name))
        alive: list[Any] = pipe.execute()
        return {name for name, live in zip(consumers, alive, strict=True) if not live}

    def _claim(self, stream: str, pending: list[Any], min_idle_ms: int) -> list[Entry]:
        """XCLAIM the given XPENDING rows; ``min_idle_ms`` makes a rival's fresh claim win."""
        if not pending:
            return []
        # XCLAIM counts this delivery too.
        counts = {text(p["message_id"]): int(p["times_delivered"]) + 1 for p in pending}
        items: Any = self._client.xclaim(stream, self.group, self.consumer, min_idle_ms, list(counts))
        return from_items(stream, items, counts)

    def _claim_from(self, stream: str, dead_consumer: str) -> list[Entry]:
        pending: Any = self._client.xpending_range(
            stream, self.group, min="-", max="+", count=self.batch_size, consumername=dead_consumer
        )
        entries = self._claim(stream, list(pending), self.dead_min_idle_ms)
        metrics.RECLAIMED.labels("dead").inc(len(entries))
        return entries

    def _claim_idle(self, budget: int) -> list[Entry]:
        """Entries of live consumers idle for over ``claim_min_idle_ms``, and this worker's orphans.

        XPENDING IDLE + XCLAIM rather than XAUTOCLAIM: the delivery counts are needed for the
        max-deliveries rule, and this worker's own entries still waiting in its batch must be skipped.
        """
        claimed: list[Entry] = []
        for stream in self.streams:
            if len(claimed) >= budget:
                break
            pending: Any = self._client.xpending_range(
                stream, self.group, min="-", max="+", count=budget, idle=self.claim_min_idle_ms
            )
            wanted = [
                p
                for p in pending
                if text(p["consumer"]) != self.consumer
                or int(p["time_since_delivered"]) >= self.own_orphan_ms
            ]
            got = self._claim(stream, wanted[: budget - len(claimed)], self.claim_min_idle_ms)
            if got:
                log.warning(
                    "claimed %d entries idle over %d ms on %s", len(got), self.claim_min_idle_ms, stream
                )
                metrics.RECLAIMED.labels("idle").inc(len(got))
            claimed += got
        return claimed

    def _forget(self, stream: str, consumer: str) -> None:
        removed = self._reap(keys=[stream, names.heartbeat_key(consumer)], args=[self.group, consumer])
        if removed != -1:
            log.info("removed dead consumer %s from %s", consumer, stream)
