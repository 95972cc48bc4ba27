"""The persistence worker's main loop: read from every shard, batch, write, then acknowledge.

Order of effects per batch, which is what makes a crash anywhere safe:
1. one multi-row INSERT and COMMIT (duplicates absorbed by the UNIQUE indexes),
2. dead letters XADDed to the DLQ and every entry XACKed, atomically.
A crash before 1 completes leaves the entries pending: this worker re-reads them on restart, or
live workers claim them once its heartbeat expires. A crash between 1 and 2 redelivers entries
whose rows exist, and the INSERT turns them into no-ops. So every entry is stored exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.scanner.backoff import backoff_delay
from barcode_pipeline.worker import metrics
from barcode_pipeline.worker.batcher import Batcher, read_count
from barcode_pipeline.worker.entries import Entry, decode, from_reply
from barcode_pipeline.worker.failover import PrimaryIdentity
from barcode_pipeline.worker.recovery import DeadLetter, Heartbeat, Recovery, ensure_groups, settle
from barcode_pipeline.worker.retention import Trimmer
from barcode_pipeline.worker.storage import BarcodeStore, CrashPoints, DbUnavailable, to_row

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 5.0
# Errors worth retrying: the server is away, loading, or failing over.
REDIS_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


class _GaveUp(PipelineError):
    """Stopping, and the grace period ran out while a dependency was still failing."""


STANDBY_POLL_S = 0.05  # how often a standby worker looks for waiting entries


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Per-process choices that are not pipeline settings (the CLI builds this from its flags)."""

    name: str
    crash: CrashPoints = field(default_factory=CrashPoints)
    sweep_interval_s: float = 1.0  # how often to look for dead or stuck consumers
    idle_block_s: float = 1.0  # longest XREADGROUP BLOCK while nothing is batched
    shutdown_grace_s: float = 10.0  # on stop, how long to keep retrying the last batch's write
    stall_limit_s: float | None = None  # main loop silent this long -> heartbeats stop (None: derived)


class Worker:
    """One consumer of ``names.WORKER_GROUP`` on every shard, writing to ``barcodes``."""

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        *,
        client: redis.Redis | None = None,
        store: BarcodeStore | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.name
        self.group = names.WORKER_GROUP
        self.streams = names.all_streams(settings.stream_shards)
        self.client = client or redis_adapter.client(settings, decode=False)
        self.store = store or BarcodeStore(
            settings.db_url, dedup_policy=settings.dedup_policy, crash=options.crash
        )
        self.batcher: Batcher[Entry] = Batcher(
            settings.worker_batch_size, settings.worker_max_delay_ms / 1000
        )
        self.recovery = Recovery(
            self.client,
            self.streams,
            self.group,
            self.name,
            heartbeat_ttl_s=settings.worker_heartbeat_ttl_s,
            claim_min_idle_ms=settings.claim_min_idle_ms,
            batch_size=settings.worker_batch_size,
            max_delay_ms=settings.worker_max_delay_ms,
        )
        self.trim = Trimmer(self.client, self.streams, retention_s=settings.stream_retention_s)
        self.primary = PrimaryIdentity(self.client) if settings.redis_sentinels else None
        self._next_trim = time.monotonic() + settings.stream_trim_interval_s
        if settings.claim_min_idle_ms <= settings.worker_max_delay_ms:
            log.warning(
                "claim_min_idle_ms (%d) <= worker_max_delay_ms (%d): workers will claim entries that "
                "are merely waiting in another worker's batch",
                settings.claim_min_idle_ms,
                settings.worker_max_delay_ms,
            )
        stall = options.stall_limit_s
        if stall is None:  # well past any legitimate pause (a DB write times out after 60 s)
            stall = max(90.0, settings.claim_min_idle_ms / 1000)
        self.heartbeat = Heartbeat(
            self.client,
            self.name,
            settings.worker_heartbeat_ttl_s,
            progress=lambda: self._progress,
            stall_limit_s=stall,
        )
        self.ready = threading.Event()  # set once own pending entries are handled (for tests, tools)
        self._stop = threading.Event()
        self._progress = time.monotonic()
        self._next_sweep = 0.0
        self._drain_deadline = float("inf")
        self.batches_written = 0  # flushed batches (tests and tools read it)

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Finish the current batch (commit + ack), then exit; safe to call from a signal handler."""
        if not self._stop.is_set():
            self._drain_deadline = time.monotonic() + self.options.shutdown_grace_s
            self._stop.set()

    def run(self) -> None:
        """Work until :meth:`stop`; never returns early because Redis or the database is down."""
        log.info(
            "worker %s on %s (batch %d / %d ms, dedup %s)",
            self.name,
            ", ".join(self.streams),
            self.settings.worker_batch_size,
            self.settings.worker_max_delay_ms,
            self.settings.dedup_policy,
        )
        started = False
        try:
            self._redis("start-up", self._start)
            self.heartbeat.start()
            started = True
            self._recover_own()
            self.ready.set()
            attempt = 0
            while not self._stop.is_set():
                try:
                    self._step()
                    attempt = 0
                except redis.RedisError as exc:
                    attempt += 1
                    self._redis_failed("read", exc, attempt)
            self._drain()
        except _GaveUp as exc:
            log.warning("stopping with unfinished work (it stays pending for a restart or takeover): %s", exc)
        finally:
            if started:
                self.heartbeat.stop()
            self.store.close()
            self.client.close()
            log.info("worker %s stopped", self.name)

    def _start(self) -> None:
        self.heartbeat.beat()  # before the first read, so nobody mistakes this consumer for dead
        ensure_groups(self.client, self.streams, self.group)

    def _recover_own(self) -> None:
        """Re-process this consumer's own pending entries (left by a previous run under this name)."""
        for stream in self.streams:
            after = "0"
            while not self._stop.is_set():
                entries = self._redis("pending read", partial(self.recovery.own_pending, stream, after))
                if not entries:
                    break
                log.info("re-processing %d own pending entries of %s", len(entries), stream)
                self._accept(entries, time.monotonic())
                while len(self.batcher):
                    self._flush(self.batcher.take(), "recovery")
                after = entries[-1].entry_id

    def _drain(self) -> None:
        leftover = self.batcher.take_all()
        for i in range(0, len(leftover), self.settings.worker_batch_size):
            self._flush(leftover[i : i + self.settings.worker_batch_size], "drain")

    # ------------------------------------------------------------------ one iteration
    def _step(self) -> None:
        now = time.monotonic()
        self._progress = now
        trigger = self.batcher.trigger(now)
        if trigger is not None:
            self._flush(self.batcher.take(), trigger)
            return
        if now >= self._next_sweep:
            self._next_sweep = now + self.options.sweep_interval_s
            claimed = self.recovery.sweep()
            if claimed:
                self._accept(claimed, now)
                return
            if self.primary is not None and self.primary.changed():
                log.warning("redis primary changed: re-reading this worker's own pending entries")
                while len(self.batcher):
                    self._flush(self.batcher.take(), "failover")
                self._recover_own()
                return
            if self.settings.stream_trim_interval_s and now >= self._next_trim:
                self._next_trim = now + self.settings.stream_trim_interval_s
                if self.recovery.is_primary:  # one trimmer is enough; it trims every shard
                    self.trim()
        if not self._reads_new():
            self._stop.wait(min(STANDBY_POLL_S, max(0.001, self._next_sweep - now)))
            return
        wait = self.batcher.wait_s(now)
        block_s = min(self.options.idle_block_s if wait is None else wait, self._next_sweep - now)
        reply: Any = self.client.xreadgroup(
            self.group,
            self.name,
            dict.fromkeys(self.streams, ">"),
            count=read_count(self.batcher.room(), len(self.streams)),
            block=max(1, round(block_s * 1000)),  # never 0: BLOCK 0 waits forever
        )
        if reply:
            self._accept(from_reply(reply), time.monotonic())

    def _reads_new(self) -> bool:
        """Standby rule: whether this worker takes new entries now.

        With every worker reading, each one commits a partial batch every max delay, so at low load
        the commit count grows with the number of workers. Instead the primary (lowest live name)
        always reads, and the others join only when the primary has fallen behind: a full batch is
        waiting undelivered, or the oldest undelivered entry has waited ``worker_standby_join_ms``.
        Entries waiting briefly while the primary commits are normal and do not count; an age, not
        a count of polls, keeps a slow commit on a loaded machine from waking the standby.
        Takeover of dead consumers' entries is unaffected (the sweep runs first), so a dead
        primary's work is still picked up in seconds.
        """
        if not self.settings.worker_standby or len(self.batcher) or self.recovery.is_primary:
            return True
        waiting, oldest_ms = self.recovery.waiting()
        return waiting >= self.settings.worker_batch_size or oldest_ms >= self.settings.worker_standby_join_ms

    def _accept(self, entries: Sequence[Entry], now: float) -> None:
        """Batch the entries, except those delivered too often: they go to the DLQ right away."""
        limit = self.settings.max_deliveries
        over = [
            DeadLetter(e, "max_deliveries", f"delivered {e.deliveries} times (limit {limit})")
            for e in entries
            if e.deliveries > limit
        ]
        if over:
            self._settle([], over)
        self.batcher.add((e for e in entries if e.deliveries <= limit), now)

    def _flush(self, entries: list[Entry], trigger: str) -> None:
        """Write one batch, then dead-letter and ack; returns only when all of it is settled."""
        if not entries:
            return
        self.batches_written += 1
        metrics.BATCH_SIZE.observe(len(entries))
        metrics.BATCHES.labels(trigger).inc()
        done: list[Entry] = []
        dead: list[DeadLetter] = []
        scans: list[tuple[Entry, StoredScan]] = []
        for entry in entries:
            if entry.fields is None:  # deleted from the stream after delivery: nothing to store
                done.append(entry)
                continue
            decoded = decode(entry)
            if isinstance(decoded, str):
                dead.append(DeadLetter(entry, decoded.split(" ", 1)[0], decoded))
            else:
                scans.append((entry, decoded))
        if scans:
            devices = {scan.device_id for _, scan in scans}
            centers = self._db("center lookup", lambda: self.store.centers(devices))
            rows = []
            kept: list[Entry] = []
            for entry, scan in scans:
                center = centers.get(scan.device_id)
                if center is None:
                    reason = f"unknown device: deviceId {scan.device_id!r} has no center mapping"
                    dead.append(DeadLetter(entry, "unknown_device", reason))
                else:
                    rows.append(to_row(scan, center, self.store.dedup_policy))
                    kept.append(entry)
            outcome = self._db("batch write", lambda: self.store.write(rows))
            rejected = dict(outcome.rejected)
            for i, entry in enumerate(kept):
                if i in rejected:
                    dead.append(DeadLetter(entry, "db_rejected", rejected[i]))
                else:
                    done.append(entry)
            metrics.ROWS_INSERTED.inc(outcome.inserted)
            metrics.DUPLICATES.inc(outcome.duplicates)
            log.debug("batch of %d (%s): %d new, %d duplicates", len(entries), trigger, outcome.inserted,
                      outcome.duplicates)  # fmt: skip
        self._settle(done, dead)

    def _settle(self, done: list[Entry], dead: list[DeadLetter]) -> None:
        self._redis("ack", lambda: settle(self.client, self.group, self.name, done=done, dead=dead))
        if not dead:
            return
        causes = Counter(letter.cause for letter in dead)
        for cause, count in causes.items():
            metrics.DEAD_LETTERED.labels(cause).inc(count)
        first = dead[0]  # one line per batch, not per entry: an unmapped device can send thousands
        log.warning(
            "dead-lettered %d entries to %s (%s); e.g. %s %s: %s",
            len(dead),
            names.DLQ_STREAM,
            ", ".join(f"{c}={n}" for c, n in causes.items()),
            first.entry.stream,
            first.entry.entry_id,
            first.reason,
        )

    # ------------------------------------------------------------------ retrying
    def _db(self, what: str, action: Callable[[], T]) -> T:
        return self._retry(what, action, (DbUnavailable,))

    def _redis(self, what: str, action: Callable[[], T]) -> T:
        return self._retry(what, action, REDIS_TRANSIENT)

    def _retry(self, what: str, action: Callable[[], T], errors: tuple[type[Exception], ...]) -> T:
        """Run ``action`` until it succeeds, backing off (capped) between attempts.

        The main loop reports progress on every attempt: waiting for a dependency is not a stall.
        Once stopping, retries go on only until the grace period ends.
        """
        attempt = 0
        while True:
            self._progress = time.monotonic()
            try:
                return action()
            except errors as exc:
                attempt += 1
                if isinstance(exc, redis.RedisError):
                    metrics.REDIS_FAILURES.inc()
                delay = backoff_delay(attempt, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)
                remaining = self._drain_deadline - time.monotonic()
                if self._stop.is_set() and remaining <= 0:
                    raise _GaveUp(f"{what}: {exc}") from exc
                log.warning("%s failed (attempt %d): %s; retrying in %.2fs", what, attempt, exc, delay)
                time.sleep(min(delay, max(0.0, remaining)))

    def _redis_failed(self, what: str, exc: redis.RedisError, attempt: int) -> None:
        """A failed read or sweep: nothing is lost (entries stay pending), so log and back off."""
        metrics.REDIS_FAILURES.inc()
        if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
            log.warning("consumer group missing (stream deleted?); re-creating it")
            try:
                ensure_groups(self.client, self.streams, self.group)
                return
            except redis.RedisError as again:
                exc = again
        if isinstance(exc, REDIS_TRANSIENT):
            log.warning("redis %s failed (attempt %d): %s", what, attempt, exc)
        else:
            log.error("redis %s failed (attempt %d): %r", what, attempt, exc)
        self._stop.wait(backoff_delay(attempt, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S))
