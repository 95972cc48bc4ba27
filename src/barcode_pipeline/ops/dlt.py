"""The processor's dead letters: inspect and replay ``barcode-events.dlt`` (a Kafka topic).

It holds Kafka records the processor could not decode or validate, with the reason and origin in
headers. Kafka cannot delete single records, so a replay re-produces the records that are valid
*now* (say, after a decoder fix) to the main topic and leaves the DLT as it is; replaying twice is
harmless because the dedup markers and the UNIQUE index absorb repeats.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.domain.records import Poison, decode
from barcode_pipeline.errors import ConfigError, DeliveryError
from barcode_pipeline.ops.dead_letters import DeadLetter, ReplayOutcome, text, with_reason

log = logging.getLogger(__name__)


def _headers(msg: Message) -> dict[str, str]:
    raw: Any = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw  # a consumer returns a list of pairs
    return {str(k): text(v) for k, v in pairs}


def _dlt_letter(msg: Message) -> DeadLetter:
    headers = _headers(msg)
    raw = msg.value() or b""
    fields: dict[str, str] = {}
    try:
        obj = orjson.loads(raw)
        if isinstance(obj, dict):
            fields = {str(k): str(v) for k, v in obj.items()}
    except orjson.JSONDecodeError:
        pass
    ts_type, ts = msg.timestamp()
    return DeadLetter(
        source="dlt",
        id=f"{msg.partition()}:{msg.offset()}",
        reason=headers.get(names.DLT_REASON_HEADER, "(no reason header)"),
        origin=headers.get(names.DLT_ORIGIN_HEADER, "?"),
        time_ms=ts if ts_type else None,
        device_id=fields.get("deviceId"),
        scan_id=fields.get("scanId"),
        fields=fields,
        raw=raw,
        key=msg.key(),
        meta=headers,
    )


def _tool_consumer(settings: Settings) -> Consumer:
    """A consumer that never commits: reading dead letters must not move anybody's offsets."""
    return Consumer(
        kafka_adapter.consumer_config(
            settings, names.tool_group(uuid.uuid4().hex[:8]), **{"enable.partition.eof": True}
        )
    )


def read_dlt(
    settings: Settings,
    *,
    since_ms: int | None = None,
    limit: int | None = None,
    topic: str = names.DLT_TOPIC,
    timeout_s: float = 20.0,
) -> list[DeadLetter]:
    """DLT records from ``since_ms`` (record time) up to the current end of every partition."""
    consumer = _tool_consumer(settings)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        partitions = sorted(meta.partitions)
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        end = {p: high for p, (_low, high) in marks.items()}
        if since_ms is None:
            start = [TopicPartition(topic, p, marks[p][0]) for p in partitions]
        else:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in partitions], timeout=10
            )
            start = [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else end[tp.partition])
                     for tp in found]  # fmt: skip
        todo = {tp.partition for tp in start if tp.offset < end[tp.partition]}
        if not todo:
            return []
        consumer.assign([tp for tp in start if tp.partition in todo])
        out: list[DeadLetter] = []
        deadline = time.monotonic() + timeout_s
        while todo and (limit is None or len(out) < limit):
            if time.monotonic() > deadline:
                raise DeliveryError(f"reading {topic} timed out (partitions {sorted(todo)} unfinished)",
                                    component="kafka")  # fmt: skip
            for msg in consumer.consume(500, 0.5):
                err = msg.error()
                partition, offset = msg.partition(), msg.offset()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and partition is not None:
                        todo.discard(partition)
                        continue
                    raise DeliveryError(f"reading {topic}: {err}", component="kafka")
                assert partition is not None and offset is not None
                if offset < end[partition]:
                    out.append(_dlt_letter(msg))
                if offset + 1 >= end[partition]:
                    todo.discard(partition)
        out.sort(key=lambda x: (x.time_ms or 0, x.id))
        return out if limit is None else out[:limit]
    finally:
        consumer.close()


def list_dlt(
    settings: Settings, *, since_ms: int | None = None, limit: int | None = 100, reason: str | None = None
) -> list[DeadLetter]:
    letters = read_dlt(settings, since_ms=since_ms, limit=None if reason else limit)
    letters = with_reason(letters, reason)
    return letters if limit is None else letters[:limit]


def _parse_dlt_id(text: str) -> tuple[int, int]:
    try:
        partition, offset = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"a DLT id looks like PARTITION:OFFSET, got {text!r}") from None
    return partition, offset


def get_dlt(settings: Settings, dlt_id: str, *, topic: str = names.DLT_TOPIC) -> DeadLetter | None:
    partition, offset = _parse_dlt_id(dlt_id)
    consumer = _tool_consumer(settings)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if msg.offset() == offset:
                return _dlt_letter(msg)
        raise DeliveryError(f"could not read {topic} {dlt_id}", component="kafka")
    finally:
        consumer.close()


def replay_dlt(
    settings: Settings,
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
    topic: str = names.DLT_TOPIC,
    target: str = names.TOPIC,
) -> ReplayOutcome:
    """Re-produce the DLT records that decode and validate now to ``target`` (key = deviceId)."""
    if ids is None and not reason and not everything:
        raise ConfigError("name the records to replay, select them by reason, or replay all of them")
    outcome = ReplayOutcome(dry_run=dry_run)
    if ids is not None:
        letters = []
        for dlt_id in ids:
            found = get_dlt(settings, dlt_id, topic=topic)
            if found is None:
                outcome.skipped.append((dlt_id, f"no such record in {topic}"))
            else:
                letters.append(found)
    else:
        letters = read_dlt(settings, topic=topic)
    letters = with_reason(letters, reason)
    valid: list[tuple[DeadLetter, bytes]] = []
    for letter in letters:
        decoded = decode(letter.raw)
        if isinstance(decoded, Poison):
            outcome.skipped.append((letter.id, f"still invalid: {decoded.reason}"))
        else:
            valid.append((letter, decoded.kafka_key))
    if dry_run or not valid:
        outcome.replayed = [(x.id, target) for x, _ in valid]
        return outcome
    failures: list[str] = []
    placed: dict[str, str] = {}

    def reporter(letter_id: str) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{letter_id}: {err}")
            else:
                placed[letter_id] = f"{target}/{msg.partition()}/{msg.offset()}"

        return on_delivery

    producer = Producer(kafka_adapter.producer_config(settings))
    for letter, key in valid:
        producer.produce(
            target,
            value=letter.raw,
            key=key,
            headers=[(names.DLT_REPLAYED_FROM_HEADER, f"{topic}/{letter.id.replace(':', '/')}".encode())],
            on_delivery=reporter(letter.id),
        )
    remaining = producer.flush(settings.kafka.produce_timeout_s + 5)
    if remaining or failures:
        raise DeliveryError(
            f"{remaining} record(s) not confirmed; failures: {failures[:5]} (replaying again is safe)",
            component="kafka",
        )
    outcome.replayed = [(x.id, placed.get(x.id, target)) for x, _ in valid]
    log.info("DLT replay: %d replayed, %d skipped", len(outcome.replayed), len(outcome.skipped))
    return outcome
