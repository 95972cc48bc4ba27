"""Per-stage backlog: what is still in flight between Kafka and the database.

Used by ``barcode-pipeline status``, by the demo and benchmarks to know when the pipeline has
drained, and by the fault-injection suite to time recovery.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings


@dataclass
class Backlog:
    kafka_lag: int = 0  # records the processor group has not committed yet
    kafka_lag_by_partition: dict[int, int] = field(default_factory=dict)
    stream_length: dict[str, int] = field(default_factory=dict)
    stream_undelivered: dict[str, int] = field(default_factory=dict)  # not yet read by any worker
    pending_by_consumer: dict[str, int] = field(default_factory=dict)  # read, not acked
    dlq_length: int = 0
    kafka_lag_age_s: float = 0.0  # how old the oldest record the processor group has not read is
    kafka_log_age_s: float = 0.0  # how old the oldest retained record is (where retention trimmed)
    redis_used_bytes: int = 0  # as Redis counts it against maxmemory
    redis_max_bytes: int = 0  # maxmemory; 0 = unbounded
    errors: list[str] = field(default_factory=list)

    @property
    def redis_full(self) -> bool:
        """Redis refuses writes (maxmemory reached with noeviction)."""
        return self.redis_max_bytes > 0 and self.redis_used_bytes >= self.redis_max_bytes

    @property
    def in_flight(self) -> int:
        return self.kafka_lag + sum(self.stream_undelivered.values()) + sum(self.pending_by_consumer.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["in_flight"] = self.in_flight
        data["redis_full"] = self.redis_full
        return data


@dataclass(frozen=True, slots=True)
class Position:
    """A partition of the topic: its retained range and where the group will read next."""

    low: int  # the oldest retained offset: above 0, retention has deleted records
    high: int  # the log end
    next: int  # the group's committed offset (the log start if it never committed)

    @property
    def lag(self) -> int:
        return max(0, self.high - self.next)


def kafka_positions(settings: Settings, group: str | None = None) -> dict[int, Position]:
    """Retained range and committed position of every partition of the topic, for ``group``."""
    group = group or settings.processor.group
    consumer = Consumer(kafka_adapter.consumer_config(settings, group, log_level=0))
    try:
        meta = consumer.list_topics(names.TOPIC, timeout=5).topics.get(names.TOPIC)
        if meta is None or meta.error is not None:
            return {}
        tps = [TopicPartition(names.TOPIC, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=5)}
        out: dict[int, Position] = {}
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=5)
            start = committed.get(tp.partition, -1)
            out[tp.partition] = Position(low, high, max(low, start) if start >= 0 else low)
        return out
    finally:
        consumer.close()


def kafka_lag(settings: Settings, group: str | None = None) -> dict[int, int]:
    """Committed-offset lag per partition (a group with no commit counts from the log start)."""
    return {p: pos.lag for p, pos in kafka_positions(settings, group).items()}


def record_times(settings: Settings, offsets: dict[int, int], timeout_s: float = 3.0) -> dict[int, int]:
    """The timestamp (epoch ms) of the record at each ``partition -> offset``, read without a group.

    The age of the record a group reads next is how close its lag comes to the topic's retention:
    a record older than ``retention.ms`` is deleted whether or not the processor has read it.
    """
    if not offsets:
        return {}
    consumer = Consumer(
        kafka_adapter.consumer_config(settings, f"{settings.processor.group}-probe", log_level=0)
    )
    try:
        consumer.assign([TopicPartition(names.TOPIC, p, o) for p, o in offsets.items()])
        found: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) < len(offsets) and time.monotonic() < deadline:
            for msg in consumer.consume(len(offsets), 0.5):
                partition = msg.partition()
                if msg.error() is None and partition is not None and partition not in found:
                    found[partition] = msg.timestamp()[1]
        return found
    finally:
        consumer.close()


def oldest_ages_s(settings: Settings, positions: dict[int, Position]) -> tuple[float, float]:
    """(age of the oldest record the group has not read, age of the oldest record still retained in a
    partition that retention has already trimmed), in seconds; 0 where there is none."""
    now_ms = time.time() * 1000
    unread = record_times(settings, {p: pos.next for p, pos in positions.items() if pos.lag > 0})
    trimmed = record_times(settings, {p: pos.low for p, pos in positions.items() if pos.low > 0})
    lag_age = max((now_ms - t for t in unread.values()), default=0.0) / 1000
    log_age = min((now_ms - t for t in trimmed.values()), default=0.0) / 1000
    return max(0.0, lag_age), max(0.0, log_age)


def _undelivered(r: redis.Redis, stream: str, group: dict[str, Any], length: int) -> int:
    """Entries the group has not delivered yet.

    XINFO GROUPS ``lag`` alone is not trusted: after Redis restarts from its AOF (e.g. after a
    SIGKILL) the group's ``entries-read`` counter can be left behind, and ``lag`` then reports
    thousands of waiting entries forever while ``last-delivered-id`` is the stream's last id.
    The ids decide: nothing is waiting when the group has delivered the last entry.
    """
    last_delivered = str(group.get("last-delivered-id", "0-0"))
    newest: Any = r.xrevrange(stream, count=1)
    if not newest or str(newest[0][0]) == last_delivered:
        return 0
    lag = group.get("lag")
    if lag is not None and int(lag) > 0:
        return int(lag)
    # lag unknown (or claiming 0 although newer entries exist): count them, up to a bound
    after: Any = r.xrange(stream, min=f"({last_delivered}", max="+", count=10_000)
    return len(after) if after else length


def redis_backlog(settings: Settings, backlog: Backlog, client: redis.Redis | None = None) -> None:
    r = client or redis_adapter.client(settings)
    try:
        for stream in names.all_streams(settings.streams.shards):
            length = r.xlen(stream)
            backlog.stream_length[stream] = length
            undelivered = 0
            try:
                for group in r.xinfo_groups(stream):
                    if group["name"] == names.WORKER_GROUP:
                        undelivered = _undelivered(r, stream, group, length)
                        break
                else:
                    undelivered = length
            except redis.ResponseError:  # stream does not exist yet
                undelivered = 0
            backlog.stream_undelivered[stream] = undelivered
            try:
                for consumer in r.xinfo_consumers(stream, names.WORKER_GROUP):
                    name = consumer["name"]
                    backlog.pending_by_consumer[name] = backlog.pending_by_consumer.get(name, 0) + int(
                        consumer["pending"]
                    )
            except redis.ResponseError:
                pass
        backlog.dlq_length = r.xlen(names.DLQ_STREAM)
        memory: Any = r.info("memory")
        # Redis compares maxmemory with used memory less its replication and AOF buffers
        backlog.redis_used_bytes = int(memory["used_memory"]) - int(
            memory.get("mem_not_counted_for_evict", 0)
        )
        backlog.redis_max_bytes = int(memory.get("maxmemory", 0))
    finally:
        if client is None:
            r.close()


def measure(settings: Settings) -> Backlog:
    backlog = Backlog()
    try:
        backlog.kafka_lag_by_partition = kafka_lag(settings)
        backlog.kafka_lag = sum(backlog.kafka_lag_by_partition.values())
    except KafkaException as exc:
        backlog.errors.append(f"kafka: {exc}")
    try:
        redis_backlog(settings, backlog)
    except redis.RedisError as exc:
        backlog.errors.append(f"redis: {exc}")
    return backlog
