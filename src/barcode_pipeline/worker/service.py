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
from barcode_pipeline.adapters.db import DbTimeouts
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.errors import ConfigError, DatabaseUnavailable, RetriesExhausted
from barcode_pipeline.liveness import Progress, StallHook
from barcode_pipeline.retry import Backoff
from barcode_pipeline.worker import metrics
from barcode_pipeline.worker.batcher import Batcher, read_count
from barcode_pipeline.worker.crash import CrashPoints
from barcode_pipeline.worker.entries import Entry, Unstorable, decode, from_reply
from barcode_pipeline.worker.failover import PrimaryIdentity
from barcode_pipeline.worker.primary import StandbyRule, is_primary
from barcode_pipeline.worker.recovery import Heartbeat, Recovery, ensure_groups
from barcode_pipeline.worker.retention import Trimmer
from barcode_pipeline.worker.settle import Rejected, settle
from barcode_pipeline.worker.storage import BarcodeStore, to_row

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF = Backoff(base_s=0.1, cap_s=5.0)
# A full Redis (maxmemory, noeviction) refuses the few writes that need memory (a new heartbeat, a
# consumer group, a dead letter), and one that cannot persist (MISCONF: its AOF disk is full)
# refuses every write, the XACK included: wait either out like any other outage, never exit on it.
REDIS_TRANSIENT = (*redis_adapter.TRANSIENT_ERRORS, redis.OutOfMemoryError, redis_adapter.WritesRefused)


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
    stall_hook: StallHook = field(default_factory=lambda: StallHook(None))  # debug: block the loop


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
        if options.idle_block_s >= settings.redis.socket_timeout_s:
            # The reply to XREADGROUP BLOCK comes after the block time: a socket timeout below it
            # would turn every idle read into a timeout error.
            raise ConfigError(
                f"BP_REDIS_SOCKET_TIMEOUT_S ({settings.redis.socket_timeout_s}) must exceed the "
                f"worker's read block ({options.idle_block_s} s)"
            )
        self.group = names.WORKER_GROUP
        self.streams = names.all_streams(settings.streams.shards)
        self.client = client or redis_adapter.client(settings, decode=False)
        self.store = store or BarcodeStore(
            settings.db.url,
            dedup_policy=settings.dedup.policy,
            crash=options.crash,
            timeouts=DbTimeouts.of(settings),
        )
        self.batcher: Batcher[Entry] = Batcher(
            settings.worker.batch_size,
            settings.worker.max_delay_ms / 1000,
            early_size=settings.worker.early_batch,
            min_interval_s=settings.worker.min_commit_interval_ms / 1000,
        )
        self.recovery = Recovery(
            self.client,
            self.streams,
            self.group,
            self.name,
            heartbeat_ttl_s=settings.worker.heartbeat_ttl_s,
            claim_min_idle_ms=settings.streams.claim_min_idle_ms,
            batch_size=settings.worker.batch_size,
            max_delay_ms=settings.worker.max_delay_ms,
        )
        self.standby = StandbyRule(
            redis_adapter.WaitingProbe(self.client, self.streams, self.group, cap=settings.worker.batch_size),
            enabled=settings.worker.standby,
            batch_size=settings.worker.batch_size,
            join_ms=settings.worker.standby_join_ms,
        )
        self.trim = Trimmer(self.client, self.streams, retention_s=settings.streams.retention_s)
        self.redis_primary = PrimaryIdentity(self.client) if settings.redis.sentinels else None
        self._reread_own = False  # see run(): after a Redis error, entries may be pending unseen
        self._next_trim = time.monotonic() + settings.streams.trim_interval_s
        if settings.streams.claim_min_idle_ms <= settings.worker.max_delay_ms:
            log.warning(
                "claim_min_idle_ms (%d) <= worker_max_delay_ms (%d): workers will claim entries that "
                "are merely waiting in another worker's batch",
                settings.streams.claim_min_idle_ms,
                settings.worker.max_delay_ms,
            )
        stall = options.stall_limit_s
        if stall is None:  # well past any legitimate pause (a DB write times out after 60 s)
            stall = max(90.0, settings.streams.claim_min_idle_ms / 1000)
        self.heartbeat = Heartbeat(
            self.client,
            self.name,
            settings.worker.heartbeat_ttl_s,
            progress=lambda: self._progress,
            stall_limit_s=stall,
        )
        self.ready = threading.Event()  # set once own pending entries are handled (for tests, tools)
        self._stop = threading.Event()
        self._progress = time.monotonic()
        # For the supervisor's watchdog (liveness.py): entries read or settled, nothing waiting
        # for this worker, or a dependency retried.
        self.progress = Progress()
        # Longest one DB call can take before its own timeouts end it: connect, send, await the reply.
        self._db_bound_s = (
            settings.db.connect_timeout_s + settings.db.write_timeout_s + settings.db.read_timeout_s
        )
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
            self.settings.worker.batch_size,
            self.settings.worker.max_delay_ms,
            self.settings.dedup.policy,
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
                    # A read cut off by this error may have been served all the same (a reply lost
                    # with the connection, e.g. Redis paused past the socket timeout): its entries
                    # are then pending under this name, unseen. Re-read them once Redis answers.
                    self._reread_own = True
                    self._redis_failed("read", exc, attempt)
            self._drain()
        except RetriesExhausted as exc:
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

    def _write_then_reread_own(self, trigger: str) -> None:
        """Write what is batched, then re-process this consumer's pending entries (the written ones
        are acked by then, so none is read twice)."""
        while len(self.batcher):
            self._flush(self.batcher.take(), trigger)
        self._recover_own()

    def _drain(self) -> None:
        leftover = self.batcher.take_all()
        for i in range(0, len(leftover), self.settings.worker.batch_size):
            self._flush(leftover[i : i + self.settings.worker.batch_size], "drain")

    # ------------------------------------------------------------------ one iteration
    def _step(self) -> None:
        self.options.stall_hook()
        now = time.monotonic()
        self._progress = now
        if self._reread_own:
            self._reread_own = False  # an error during the re-read sets it again
            self._write_then_reread_own("reconnect")
            return
        trigger = self.batcher.trigger(now)
        if trigger is not None:
            self._flush(self.batcher.take(now), trigger)
            return
        if now >= self._next_sweep:
            self._next_sweep = now + self.options.sweep_interval_s
            claimed = self.recovery.sweep()
            if claimed:
                self._accept(claimed, now)
                return
            if self.redis_primary is not None and self.redis_primary.changed():
                log.warning("redis primary changed: re-reading this worker's own pending entries")
                self._write_then_reread_own("failover")
                return
            if self.settings.streams.trim_interval_s and now >= self._next_trim:
                self._next_trim = now + self.settings.streams.trim_interval_s
                if is_primary(self.name, self.recovery.live_peers):  # one trimmer trims every shard
                    self.trim()
        if not self.standby.reads_new(self.name, self.recovery.live_peers, batched=len(self.batcher)):
            self.progress.idle()  # the primary keeps up: nothing waits for this worker
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
        else:
            self.progress.idle()

    def _accept(self, entries: Sequence[Entry], now: float) -> None:
        """Batch the entries, except those delivered too often: they go to the DLQ right away."""
        self.progress.moved()
        limit = self.settings.streams.max_deliveries
        over = [
            Rejected(e, Cause.MAX_DELIVERIES, f"delivered {e.deliveries} times (limit {limit})")
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
        dead: list[Rejected] = []
        scans: list[tuple[Entry, StoredScan]] = []
        for entry in entries:
            if entry.fields is None:  # deleted from the stream after delivery: nothing to store
                done.append(entry)
                continue
            decoded = decode(entry)
            if isinstance(decoded, Unstorable):
                dead.append(Rejected(entry, decoded.cause, decoded.reason))
            else:
                scans.append((entry, decoded))
        if scans:
            devices = {scan.device_id for _, scan in scans}
            centers = self._db("center lookup", lambda: self.store.centers(devices))
            rows = []
            kept: list[Entry] = []
            stored: list[StoredScan] = []  # parallel to kept
            for entry, scan in scans:
                center = centers.get(scan.device_id)
                if center is None:
                    reason = f"unknown device: deviceId {scan.device_id!r} has no center mapping"
                    dead.append(Rejected(entry, Cause.UNKNOWN_DEVICE, reason))
                else:
                    rows.append(to_row(scan, center, self.store.dedup_policy))
                    kept.append(entry)
                    stored.append(scan)
            outcome = self._db("batch write", lambda: self.store.write(rows))
            rejected = {i: (cause, reason) for i, cause, reason in outcome.rejected}
            for i, entry in enumerate(kept):
                if i in rejected:
                    dead.append(Rejected(entry, *rejected[i]))
                else:
                    done.append(entry)
            metrics.observe_committed([scan for i, scan in enumerate(stored) if i not in rejected])
            metrics.ROWS_INSERTED.inc(outcome.inserted)
            metrics.DUPLICATES.inc(outcome.duplicates)
            # Duplicates reach a worker only when an entry comes again (a batch redelivered after a
            # crash, a replay, markers lost): worth a line, and the fault scenarios count them.
            log.log(logging.INFO if outcome.duplicates else logging.DEBUG,
                    "batch of %d (%s): %d new, %d duplicates absorbed", len(entries), trigger,
                    outcome.inserted, outcome.duplicates)  # fmt: skip
        self._settle(done, dead)

    def _settle(self, done: list[Entry], dead: list[Rejected]) -> None:
        limit = self.settings.streams.dlq_max_entries
        deferred = self._redis(
            "ack",
            lambda: settle(self.client, self.group, self.name, done=done, dead=dead, dlq_max_entries=limit),
        )
        self.progress.moved()
        if deferred:
            metrics.DEAD_LETTERS_DEFERRED.inc(len(deferred))
            log.warning(
                "kept %d dead letters pending: the DLQ is at its limit (%d, BP_DLQ_MAX_ENTRIES) or Redis is "
                "full; they come back once there is room",
                len(deferred),
                limit,
            )
            dead = []  # settle writes a batch's dead letters all together or not at all
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
        def bounded() -> T:
            with self.progress.inside(self._db_bound_s):  # the watchdog trusts the DB timeouts
                return action()

        return self._retry(what, bounded, (DatabaseUnavailable,))

    def _redis(self, what: str, action: Callable[[], T]) -> T:
        # The server in the label: an authentication error ("invalid username-password pair") says not which.
        label = f"{what} (redis {redis_adapter.address(self.client)})"
        return self._retry(label, partial(redis_adapter.refusal_typed, action), REDIS_TRANSIENT)

    def _retry(self, what: str, action: Callable[[], T], errors: tuple[type[Exception], ...]) -> T:
        """Run ``action`` until it succeeds, backing off (capped) between attempts.

        The main loop reports progress on every attempt: waiting for a dependency is not a stall.
        Once stopping, retries go on only until the grace period ends.
        """

        def budget() -> float | None:
            return self._drain_deadline - time.monotonic() if self._stop.is_set() else None

        def count(exc: Exception) -> None:
            self.progress.waiting()  # a dependency is down: for the watchdog, waiting is no stall
            if isinstance(exc, redis.RedisError):
                metrics.REDIS_FAILURES.inc()

        def progressed() -> None:
            self._progress = time.monotonic()

        return BACKOFF.call(
            what,
            action,
            errors=errors,
            sleep=time.sleep,
            budget=budget,
            on_error=count,
            on_attempt=progressed,
        )

    def _redis_failed(self, what: str, exc: redis.RedisError, attempt: int) -> None:
        """A failed read or sweep: nothing is lost (entries stay pending), so log and back off."""
        metrics.REDIS_FAILURES.inc()
        self.progress.waiting()
        if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
            log.warning("consumer group missing (stream deleted?); re-creating it")
            try:
                ensure_groups(self.client, self.streams, self.group)
                return
            except redis.RedisError as again:
                exc = again
        if isinstance(exc, REDIS_TRANSIENT) or (
            isinstance(exc, redis.ResponseError) and redis_adapter.writes_refused(exc)
        ):
            log.warning("redis %s failed (attempt %d): %s", what, attempt, exc)
        else:
            log.error("redis %s failed (attempt %d): %r", what, attempt, exc)
        self._stop.wait(BACKOFF.delay(attempt))
