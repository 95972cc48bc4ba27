"""The processor loop.

Order of effects per batch, which is what makes a crash anywhere safe:
1. poison records -> DLT topic (confirmed), 2. events -> Redis (dedup marker + XADD, atomic per
event), 3. Kafka offsets committed. A crash before 3 redelivers the batch; the markers (and, if
Redis lost them, the DB's UNIQUE index) turn the redelivery into no-ops. Redis answering is not
Redis keeping: a Redis that comes back with another run id may lack what it answered last, so
the processor rewinds then (processor/failover.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import SCAN_FIELD, ScanEvent
from barcode_pipeline.domain.records import Poison, decode
from barcode_pipeline.errors import ConsumerFatalError, DeliveryError
from barcode_pipeline.liveness import Progress, StallHook
from barcode_pipeline.processor import metrics
from barcode_pipeline.processor.failover import CommitHistory, Marks, PrimaryWatch, ReplicaShortfall
from barcode_pipeline.processor.fencing import ReplacementBudget, close_within, is_fatal
from barcode_pipeline.processor.markers import MarkerScheme, legacy_key, legacy_markers_present
from barcode_pipeline.processor.routing import shard_of, to_stored
from barcode_pipeline.processor.wedge import IdleWatch, records_waiting
from barcode_pipeline.retry import Backoff

log = logging.getLogger(__name__)

BACKOFF = Backoff(base_s=0.1, cap_s=5.0)
STARTUP_BACKOFF = Backoff(base_s=0.5, cap_s=10.0)
# NoScriptError: a new primary after a failover has not cached the script yet (the retry's pipeline
# loads it first); ReplicaShortfall: WAIT came back short, so the batch must not be committed;
# OutOfMemoryError: Redis is full (maxmemory, noeviction) and refused the call whole: wait until
# the workers' trimming or an operator frees memory, rather than exit and be restarted in a loop.
# WritesRefused: Redis cannot persist (a full disk under its AOF): the same wait.
PUBLISH_RETRIED = (
    *redis_adapter.TRANSIENT_ERRORS,
    NoScriptError,
    ReplicaShortfall,
    OutOfMemoryError,
    redis_adapter.WritesRefused,
)
WEDGED_AFTER_S = 20.0  # idle this long with records waiting: the consumer is stuck (see wedge.py)
SCRIPT_CHUNK = 100  # events per Lua call
IDLE_PROBE_S = 1.0  # idle, the processor still asks Redis's run id this often: a restart is noticed


@dataclass
class BatchOutcome:
    published: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    rewound: int = 0  # records re-read after a Redis primary change (processor/failover.py)


class Processor:
    """Consumes ``names.TOPIC`` in batches and publishes each event once to its Redis stream shard."""

    def __init__(
        self,
        settings: Settings,
        *,
        group: str | None = None,
        instance: str | None = None,
        stall_hook: StallHook | None = None,
    ) -> None:
        """``instance`` makes the membership static (``group.instance.id``).

        A processor restarted under the same instance name, after a crash or a clean stop, gets its
        partitions back at once: the broker keeps them for it for the session timeout instead of
        waiting that long for the old member to expire and then rebalancing. The price: a static
        member that is gone for good holds its partitions for the session timeout, and an offset
        reset on the group must wait that long after a stop.
        """
        self.settings = settings
        self.group: str = group or settings.processor.group
        self.stop_event = threading.Event()
        extra: dict[str, object] = {
            "client.id": f"processor-{self.group}",
            "on_commit": self._on_commit,
            "fetch.min.bytes": settings.processor.fetch_min_bytes,
            "fetch.wait.max.ms": settings.processor.fetch_wait_ms,
        }
        if instance:
            extra["group.instance.id"] = instance
        self._consumer_conf = kafka_adapter.consumer_config(settings, self.group, **extra)
        self.consumer = Consumer(self._consumer_conf)
        self._fatal: KafkaError | None = None  # set by the commit callback; see fencing.py
        self._replacements = ReplacementBudget()
        self._idle: IdleWatch | None = None  # set by run(): only a group member can be wedged
        self.wedged_after_s = WEDGED_AFTER_S
        self._uncommitted: dict[int, int] = {}
        self.dlt = Producer(kafka_adapter.producer_config(settings, **{"linger.ms": 5}))
        self.redis = redis_adapter.client(settings)
        self.script = self.redis.register_script(redis_adapter.lua_source("dedupe_publish"))
        self.markers = MarkerScheme(settings.dedup.policy, settings.dedup.buckets, settings.dedup.window_s)
        # "auto": None until the first publish looks (retried with it while Redis is down)
        self.legacy_markers: bool | None = {"on": True, "off": False}.get(settings.dedup.legacy_markers)
        self.streams = names.all_streams(settings.streams.shards)
        self.totals = BatchOutcome()
        self._last_lag = 0.0
        # Commit protocol across Redis failovers (processor/failover.py).
        self.wait_replicas = settings.redis.min_replicas
        # Always, not only with Sentinel: a single Redis restarted after a crash has a new run id too.
        self.watch = PrimaryWatch()
        self._last_probe = 0.0
        self.history = CommitHistory(keep_ms=int(max(60.0, 3 * settings.redis.rewind_window_s) * 1000))
        self.marks = Marks(names.TOPIC, self.history, int(settings.redis.rewind_window_s * 1000))
        self._run_id: str | None = None
        self._earlier = 0  # published by attempts at the current batch whose WAIT came back short
        # For the supervisor's watchdog (liveness.py): consumed-and-published batches and Redis
        # retries count as progress; an empty poll does not (records may wait unfetched).
        self.progress = Progress()
        self._stall_hook = stall_hook or StallHook(None)
        self._last_assignment = 0.0

    # ------------------------------------------------------------------ main loops
    def run(self) -> None:
        """Consume the live topic as a member of the processor group until stopped."""
        # Kafka unreachable at start (down, a wrong password, an untrusted certificate): back off and
        # try again, logging why, rather than exit and be restarted every second by the supervisor.
        STARTUP_BACKOFF.call(
            f"start-up (kafka {self.settings.kafka.bootstrap})",
            lambda: kafka_adapter.ensure_topics(self.settings),
            errors=(DeliveryError,),
            sleep=self.stop_event.wait,
            budget=lambda: 0.0 if self.stop_event.is_set() else None,
            on_error=lambda _exc: self.progress.waiting(),  # for the watchdog: waiting is no stall
        )
        self._subscribe()
        self._idle = IdleWatch(self.wedged_after_s, self.settings.processor.poll_timeout_s)
        log.info("processor consuming %s as group %s", names.TOPIC, self.group)
        try:
            while not self.stop_event.is_set():
                try:
                    self._step()
                except ConsumerFatalError as exc:
                    self._replace_consumer(exc)
        finally:
            self.close()

    def _replace_consumer(self, exc: ConsumerFatalError) -> None:
        """A fatally failed consumer never fetches again: build a new one under the same name.

        Offsets not yet committed are simply re-read by the new instance (the markers absorb
        them). More replacements than the budget allows mean a rival with the same instance
        name, and the error propagates (the process exits) as before.
        """
        if not self._replacements.allow():
            raise DeliveryError(
                f"consumer failed fatally {self._replacements.limit} times within "
                f"{self._replacements.window_s:.0f}s (another processor with the same --instance?): {exc}",
                component="kafka",
            ) from exc
        log.error("kafka consumer failed fatally (%s); replacing it under the same group and instance", exc)
        metrics.CONSUMER_REPLACEMENTS.inc()
        close_within(self.consumer.close)
        self._fatal = None
        self._uncommitted.clear()
        self.consumer = Consumer(self._consumer_conf)
        self._subscribe()
        if self._idle is not None:
            self._idle.reset()

    def run_range(self, start: Sequence[TopicPartition], end: dict[int, int]) -> BatchOutcome:
        """Re-drive a fixed range of the topic (replay): from ``start`` until each partition's ``end``."""
        pending = {tp.partition for tp in start if tp.offset < end.get(tp.partition, 0)}
        if not pending:
            self.close()
            return self.totals
        # A fixed range from explicit offsets, assigned by hand: no commit mark is read (the replay
        # group's earlier commits say nothing about it); only a server change during it rewinds.
        self.consumer.assign([tp for tp in start if tp.partition in pending])
        try:
            while pending and not self.stop_event.is_set():
                outcome = self._step()
                for partition, next_offset in (outcome.offsets if outcome else {}).items():
                    if next_offset >= end.get(partition, 0):
                        pending.discard(partition)
                        self.consumer.pause([TopicPartition(names.TOPIC, partition)])
        finally:
            self.close()
        return self.totals

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._final_commit()
            # A dynamic member leaves the group at once, so a successor gets the partitions now; a
            # static one keeps them for the session timeout, for its own restart.
            self.consumer.close()
        self.dlt.flush(5)
        self.redis.close()

    # ------------------------------------------------------------------ one batch
    def _step(self) -> BatchOutcome | None:
        self._stall_hook()
        started = time.monotonic()
        msgs = self.consumer.consume(self.settings.processor.batch, self.settings.processor.poll_timeout_s)
        if self._fatal is not None:  # reported by the commit callback during consume()
            raise ConsumerFatalError(f"fatal consumer error: {self._fatal}", component="kafka")
        if self._idle is not None and self._idle.polled(len(msgs), time.monotonic() - started):
            self._check_wedged()
        self._maybe_report_lag()
        self._note_assignment()
        if not msgs:
            self._probe_primary()
            return None
        outcome = self.handle(msgs)
        self.progress.moved()
        self.totals.published += outcome.published
        self.totals.duplicates += outcome.duplicates
        self.totals.dead_lettered += outcome.dead_lettered
        return outcome

    def handle(self, msgs: Iterable[Message]) -> BatchOutcome:
        """Process one batch end to end and commit its offsets (see module docstring for the order)."""
        outcome = BatchOutcome()
        events: list[ScanEvent] = []
        ingest_times: list[int] = []  # the records' Kafka timestamps: when ingest produced them
        poison: list[tuple[Message, str]] = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if is_fatal(err):  # fenced: the consumer instance is dead (see fencing.py)
                    raise ConsumerFatalError(f"fatal consumer error: {err}", component="kafka")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            outcome.offsets[partition] = max(outcome.offsets.get(partition, 0), offset + 1)
            decoded = decode(msg.value())
            if isinstance(decoded, Poison):
                poison.append((msg, decoded.reason))
            else:
                events.append(decoded)
                ingest_times.append(msg.timestamp()[1])
        metrics.BATCH_SIZE.observe(len(events) + len(poison))
        if poison:
            self._dead_letter(poison)
            outcome.dead_lettered = len(poison)
            metrics.EVENTS.labels("dlt").inc(len(poison))
        if events:
            outcome.published, outcome.duplicates = self._publish_with_retry(events, ingest_times)
            metrics.EVENTS.labels("published").inc(outcome.published)
            metrics.EVENTS.labels("duplicate").inc(outcome.duplicates)
            if self._primary_changed():
                return outcome  # rewound: this batch comes back with the re-read range
        if outcome.offsets:
            self._commit(outcome.offsets)
        return outcome

    def _publish_with_retry(self, events: list[ScanEvent], ingest_times: list[int]) -> tuple[int, int]:
        """Redis down -> keep this batch, back off, retry; nothing is committed meanwhile."""
        self._earlier = 0
        published, _ = BACKOFF.call(
            f"publishing a batch of {len(events)} to redis",
            lambda: self._publish_once(events, ingest_times),
            errors=PUBLISH_RETRIED,
            sleep=self.stop_event.wait,
            budget=lambda: 0.0 if self.stop_event.is_set() else None,  # stopping: give the batch back
            on_error=self._redis_failed,
            component="redis",
        )
        published = min(len(events), published + self._earlier)
        return published, len(events) - published

    def _publish_once(self, events: list[ScanEvent], ingest_times: list[int]) -> tuple[int, int]:
        return redis_adapter.refusal_typed(lambda: self.publish(events, ingest_times))

    def _redis_failed(self, exc: Exception) -> None:
        if isinstance(exc, ReplicaShortfall):
            self._earlier += exc.published
            metrics.REPLICA_SHORTFALLS.inc()
            # The server may be an isolated old primary: the next connection asks Sentinel again.
            self.redis.connection_pool.disconnect()
        else:
            metrics.REDIS_FAILURES.inc()
        if isinstance(exc, OutOfMemoryError):
            metrics.REDIS_FULL.inc()
        self.progress.waiting()  # waiting for a dependency is not a stall

    def publish(self, events: list[ScanEvent], ingest_times: list[int] | None = None) -> tuple[int, int]:
        """Dedup + XADD every event in one pipelined round trip; returns (published, duplicates).

        ``ingest_times`` (epoch ms, one per event) travel with the entry so the worker can measure
        ingest-to-committed; unknown ones are 0.

        Events go to Redis in chunks of ``SCRIPT_CHUNK``, one script call per chunk: each event
        is still atomic (marker and entry together), and a call stays short enough not to stall Redis.
        """
        s = self.settings
        shards, policy, zone = s.streams.shards, s.dedup.policy, s.time_zone  # read once per batch
        now = int(time.time() * 1000)
        if self.legacy_markers is None:
            self.legacy_markers = legacy_markers_present(self.redis)
            log.info(
                "legacy one-key duplicate markers %s", "found: checked too" if self.legacy_markers else "none"
            )
        per_event = 3 if self.legacy_markers else 2
        started = time.perf_counter()
        # One connection, no MULTI: WAIT must follow the scripts on the connection that ran them.
        pipe = self.redis.pipeline(transaction=False)
        chunks = 0
        for i in range(0, len(events), SCRIPT_CHUNK):
            keys: list[str] = []
            # every entry is one field/value pair (SCAN_FIELD)
            args: list[str | bytes | int] = [2, per_event]
            chunk = events[i : i + SCRIPT_CHUNK]
            for j, event in enumerate(chunk, start=i):
                marker = self.markers.of(event, now / 1000)
                keys += (marker.key, self.streams[shard_of(event.device_id, shards)])
                if per_event == 3:
                    keys.append(legacy_key(event, policy))
                ingest_ms = ingest_times[j] if ingest_times is not None else 0
                stored = to_stored(event, zone, now, max(0, ingest_ms))
                args += (marker.field, marker.expire_at, SCAN_FIELD, stored.to_entry())
            keys.append(names.publish_counter(shard_of(chunk[0].device_id, shards)))
            self.script(keys=keys, args=args, client=pipe)
            chunks += 1
        if self.wait_replicas:
            pipe.wait(self.wait_replicas, s.redis.wait_timeout_ms)
        pipe.info("server")  # the run id: a different server than last time may lack our writes
        replies = pipe.execute()
        published = sum(sum(flags) for flags in replies[:chunks])
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        rest = replies[chunks:]
        if self.wait_replicas:
            acked = int(rest.pop(0))
            if acked < self.wait_replicas:
                raise ReplicaShortfall(acked, self.wait_replicas, published)
        self._run_id = str(rest.pop(0).get("run_id", ""))
        return published, len(events) - published

    def _primary_changed(self) -> bool:
        """After a publish: if the Redis server is not the one our commits name, rewind the group.

        Two ways to find out (processor/failover.py): this process saw another run id before, or a
        partition it just took over carries the commit mark of another server. Either way the
        records that server may have lost are read again; markers and the UNIQUE key absorb the rest.
        """
        if not self._run_id:
            return False
        now_ms = int(time.time() * 1000)
        last_seen = self.watch.changed_since(self._run_id)
        try:
            done = self.marks.rewind(self.consumer, self._run_id, last_seen, now_ms)
        except KafkaException as exc:
            # Nothing committed, the new primary not recorded: the next batch tries the rewind again.
            log.error("rewind after a Redis primary change failed (retried with the next batch): %s", exc)
            return True
        self.watch.seen(self._run_id, now_ms)
        if done is None:
            return False
        self._uncommitted.update({tp.partition: tp.offset for tp in done.targets})
        self.totals.rewound += done.rewound
        metrics.REWINDS.inc()
        metrics.REWOUND_RECORDS.inc(done.rewound)
        if last_seen is not None:
            log.warning("redis server changed (run id): rewound %d records of %d partitions to what was "
                        "committed at epoch ms %d (%.0f s before the old server was last seen)", done.rewound,
                        len(done.targets), done.since_ms, self.settings.redis.rewind_window_s)  # fmt: skip
        else:
            log.warning("partitions %s were last committed against another redis server (run id): rewound %d "
                        "records to the offsets committed %.0f s before", done.inherited, done.rewound,
                        self.settings.redis.rewind_window_s)  # fmt: skip
        return True

    def _subscribe(self) -> None:
        marks = self.marks
        self.consumer.subscribe([names.TOPIC], on_assign=marks.on_assign, on_revoke=marks.on_revoke,
                                on_lost=marks.on_revoke)  # fmt: skip

    def _probe_primary(self) -> None:
        """Idle: ask Redis's run id now and then, so a restart that lost writes is redriven without
        waiting for the next record."""
        now = time.monotonic()
        if now - self._last_probe < IDLE_PROBE_S:
            return
        self._last_probe = now
        try:
            self._run_id = str(self.redis.info("server").get("run_id", "")) or self._run_id
        except RedisError as exc:
            log.debug("redis run id probe failed: %s", exc)
            return
        self._primary_changed()

    def _dead_letter(self, poison: list[tuple[Message, str]]) -> None:
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for msg, reason in poison:
            origin = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
            log.warning("poison record %s -> %s: %s", origin, names.DLT_TOPIC, reason)
            self.dlt.produce(
                names.DLT_TOPIC,
                value=msg.value(),
                key=msg.key(),
                headers=[
                    (names.DLT_REASON_HEADER, reason.encode()),
                    (names.DLT_ORIGIN_HEADER, origin.encode()),
                ],
                on_delivery=on_delivery,
            )
        remaining = self.dlt.flush(self.settings.kafka.produce_timeout_s)
        if remaining or failures:
            # Not committing is the safe answer: the batch comes back and is dead-lettered again.
            raise DeliveryError(f"DLT write not confirmed ({failures or remaining})", component="kafka")

    def _commit(self, offsets: dict[int, int]) -> None:
        """Commit asynchronously: a lost commit only means a redelivery, which the markers absorb.

        The last offsets are committed synchronously on close, so a clean stop redelivers nothing.
        """
        tps = self.marks.entries(self._run_id, offsets)
        self._uncommitted.update(offsets)
        self.history.record(int(time.time() * 1000), offsets)
        try:
            self.consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed (%s); the batch will be redelivered and deduplicated", exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            if is_fatal(err):
                self._fatal = err
            # Typically a rebalance: another member re-reads these records and the markers absorb them.
            metrics.COMMIT_FAILURES.inc()
            log.warning("offset commit failed (%s); those records will be redelivered and deduplicated", err)

    def _final_commit(self) -> None:
        owned = {tp.partition for tp in self.consumer.assignment()}  # never commit for a partition we lost
        tps = self.marks.entries(self._run_id, {p: o for p, o in self._uncommitted.items() if p in owned})
        if not tps:
            return
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            log.warning("final offset commit failed (%s); the last batch will be redelivered", exc)

    def _note_assignment(self) -> None:
        """The partitions held, once a second, so the watchdog knows whose backlog is whose."""
        now = time.monotonic()
        if now - self._last_assignment < 1.0:
            return
        self._last_assignment = now
        self.progress.partitions = sorted(
            tp.partition for tp in self.consumer.assignment() if tp.partition is not None
        )

    def _check_wedged(self) -> None:
        """Idle for a while: if a fresh client sees records waiting for us, this consumer is stuck."""
        assert self._idle is not None
        mine = {tp.partition for tp in self.consumer.assignment()}
        waiting = records_waiting(self.settings, self.group, mine)
        if waiting:
            raise ConsumerFatalError(
                f"the consumer delivered nothing for {self._idle.idle_s:.0f}s while {waiting} records wait "
                f"(assigned partitions: {sorted(mine) or 'none'})",
                component="kafka",
            )

    def _maybe_report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5.0:
            return
        self._last_lag = now
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                if tp.partition is None or tp.offset is None or tp.offset < 0:
                    continue
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=1.0, cached=False)
                metrics.LAG.labels(str(tp.partition)).set(max(0, high - tp.offset))
        except KafkaException as exc:
            log.debug("lag probe failed: %s", exc)
