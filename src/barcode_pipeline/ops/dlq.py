"""Dead letters: inspect and replay ``barcode:dlq`` (Redis) and ``barcode-events.dlt`` (Kafka).

Two stores, because scans fail at two places:

* the **DLQ** stream holds entries a persistence worker could not store (unknown device, delivered
  too often, refused by the database). Each keeps the original stream fields plus ``dlq_*`` fields
  (original stream and id, reason, deliveries, consumer, time). Replaying one re-adds the original
  fields to its original shard stream and deletes it from the DLQ, in one Lua call, so two
  operators replaying at once cannot add it twice.
* the **DLT** topic holds Kafka records the processor could not decode or validate, with the reason
  and origin in headers. Kafka cannot delete single records, so a replay re-produces the records
  that are valid *now* (say, after a decoder fix) to the main topic and leaves the DLT as it is;
  replaying twice is harmless because the dedup markers and the UNIQUE index absorb repeats.

Replays are meant for after the cause is fixed. The obvious non-fixes are refused unless
``force``: an entry of a device that still has no center mapping, or one that is malformed for good.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError, DeliveryError
from barcode_pipeline.processor.decode import Poison, decode

log = logging.getLogger(__name__)

Source = Literal["dlq", "dlt"]
REPLAYED_FROM_HEADER = "bp-replayed-from"  # set on records re-produced from the DLT
DLQ_FIELD_PREFIX = b"dlq_"
# Reasons (their first word, as the worker writes them) a replay cannot cure by itself.
PERMANENT_REASONS = ("malformed", "invalid")
UNKNOWN_DEVICE_REASON = "unknown device"

# Delete from the DLQ and re-add to the shard stream atomically; a second replay of the same
# entry finds nothing to delete and adds nothing.
REPLAY_SCRIPT = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter from either store, in a shape an operator (or a check) can read."""

    source: Source
    id: str  # DLQ entry id, or "partition:offset" in the DLT
    reason: str
    origin: str  # "stream/entry-id" (DLQ) or "topic/partition/offset" (DLT)
    time_ms: int | None
    device_id: str | None
    scan_id: str | None
    deliveries: int | None = None
    fields: dict[str, str] = field(default_factory=dict)  # DLQ: the original entry; DLT: decoded JSON
    raw: bytes | None = field(default=None, repr=False)  # DLT: the record value as written
    key: bytes | None = field(default=None, repr=False)  # DLT: the record key
    meta: dict[str, str] = field(default_factory=dict)  # DLQ: dlq_* fields; DLT: headers
    # DLQ: the original fields byte for byte (a replay must not re-encode what it cannot decode)
    raw_fields: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "id": self.id,
            "reason": self.reason,
            "origin": self.origin,
            "time_ms": self.time_ms,
            "device_id": self.device_id,
            "scan_id": self.scan_id,
            "deliveries": self.deliveries,
            "fields": self.fields,
            "meta": self.meta,
        }
        if self.raw is not None:
            data["value"] = self.raw.decode("utf-8", "replace")
        if self.key is not None:
            data["key"] = self.key.decode("utf-8", "replace")
        return data


@dataclass
class ReplayOutcome:
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, where it went)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, why not)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "replayed": [{"id": i, "to": t} for i, t in self.replayed],
            "skipped": [{"id": i, "why": w} for i, w in self.skipped],
        }


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def binary_client(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """Binary mode: DLQ entries may hold bytes that are not UTF-8 (that may be why they are here)."""
    return redis_adapter.client(settings, timeout=timeout, decode=False)


# ---------------------------------------------------------------------------------------- DLQ (Redis)
def _dlq_letter(entry_id: bytes | str, raw_fields: dict[bytes, bytes]) -> DeadLetter:
    original = {_text(k): _text(v) for k, v in raw_fields.items() if not k.startswith(DLQ_FIELD_PREFIX)}
    meta = {_text(k): _text(v) for k, v in raw_fields.items() if k.startswith(DLQ_FIELD_PREFIX)}
    eid = _text(entry_id)
    deliveries = meta.get("dlq_deliveries", "")
    stamp = meta.get("dlq_time", "")
    return DeadLetter(
        source="dlq",
        id=eid,
        reason=meta.get("dlq_reason", "(no reason recorded)"),
        origin=f"{meta.get('dlq_stream', '?')}/{meta.get('dlq_id', '?')}",
        time_ms=int(stamp) if stamp.isdigit() else int(eid.split("-")[0]),
        device_id=original.get("dev"),
        scan_id=original.get("sid"),
        deliveries=int(deliveries) if deliveries.isdigit() else None,
        fields=original,
        meta=meta,
        raw_fields=tuple((k, v) for k, v in raw_fields.items() if not k.startswith(DLQ_FIELD_PREFIX)),
    )


def read_dlq(
    client: redis.Redis,
    *,
    since_ms: int | None = None,
    limit: int | None = None,
    stream: str = names.DLQ_STREAM,
) -> list[DeadLetter]:
    """DLQ entries, oldest first, from ``since_ms`` (entry ids are dead-lettering times)."""
    start = f"{since_ms}-0" if since_ms is not None else "-"
    out: list[DeadLetter] = []
    page = 1000 if limit is None else min(1000, limit)
    while limit is None or len(out) < limit:
        items: Any = client.xrange(stream, min=start, max="+", count=page)
        if not items:
            break
        out.extend(_dlq_letter(eid, fields) for eid, fields in items)
        last = _text(items[-1][0])
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(items) < page:
            break
    return out if limit is None else out[:limit]


def list_dlq(
    settings: Settings, *, since_ms: int | None = None, limit: int | None = 100, reason: str | None = None
) -> list[DeadLetter]:
    """DLQ entries (oldest first), optionally only those whose reason contains ``reason``."""
    client = binary_client(settings)
    try:
        letters = read_dlq(client, since_ms=since_ms, limit=None if reason else limit)
    finally:
        client.close()
    if reason:
        letters = [x for x in letters if reason.lower() in x.reason.lower()]
    return letters if limit is None else letters[:limit]


def get_dlq(settings: Settings, entry_id: str) -> DeadLetter | None:
    client = binary_client(settings)
    try:
        items: Any = client.xrange(names.DLQ_STREAM, min=entry_id, max=entry_id, count=1)
    except redis.ResponseError as exc:
        raise ConfigError(f"not a stream entry id: {entry_id!r} ({exc})") from None
    finally:
        client.close()
    return _dlq_letter(items[0][0], items[0][1]) if items else None


def _mapped_devices(settings: Settings, devices: Iterable[str]) -> set[str]:
    wanted = sorted(set(devices))
    if not wanted:
        return set()
    conn = db.connect(settings.db_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(wanted))
            cur.execute(f"SELECT device_id FROM device_center_mapping WHERE device_id IN ({marks})", wanted)
            return {str(row[0]) for row in cur.fetchall()}
    finally:
        conn.close()


def _dlq_blocker(letter: DeadLetter, known_streams: set[str], mapped: set[str], force: bool) -> str | None:
    """Why this entry must not be replayed now, or None."""
    target = letter.meta.get("dlq_stream", "")
    if target not in known_streams:
        return f"original stream {target!r} is not one of this pipeline's shards"
    if not letter.raw_fields:
        return "the entry kept no original fields"
    if force:
        return None
    first_word = letter.reason.split(" ", 1)[0].rstrip(":").lower()
    if first_word in PERMANENT_REASONS:
        return f"permanently invalid ({letter.reason}); a replay would dead-letter it again (use --force)"
    if letter.reason.lower().startswith(UNKNOWN_DEVICE_REASON) and letter.device_id not in mapped:
        return f"device {letter.device_id!r} still has no center mapping; add it first (or use --force)"
    return None


def replay_dlq(
    settings: Settings,
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> ReplayOutcome:
    """Move DLQ entries back to their shard streams: ``ids``, those matching ``reason``, or ``everything``."""
    if ids is None and not reason and not everything:
        raise ConfigError("name the entries to replay, select them by reason, or replay all of them")
    outcome = ReplayOutcome(dry_run=dry_run)
    if ids is not None:
        letters: list[DeadLetter] = []
        for entry_id in ids:
            found = get_dlq(settings, entry_id)
            if found is None:
                outcome.skipped.append((entry_id, "not in the DLQ (already replayed?)"))
            else:
                letters.append(found)
        if reason:
            letters = [x for x in letters if reason.lower() in x.reason.lower()]
    else:
        letters = list_dlq(settings, limit=None, reason=reason)
    unknown = [
        x.device_id for x in letters if x.device_id and x.reason.lower().startswith(UNKNOWN_DEVICE_REASON)
    ]
    mapped = _mapped_devices(settings, unknown)
    streams = set(names.all_streams(settings.stream_shards))
    todo: list[DeadLetter] = []
    for letter in letters:
        why = _dlq_blocker(letter, streams, mapped, force)
        if why:
            outcome.skipped.append((letter.id, why))
        else:
            todo.append(letter)
    if dry_run:
        outcome.replayed = [(x.id, x.meta["dlq_stream"]) for x in todo]
        return outcome
    client = binary_client(settings)
    try:
        script = client.register_script(REPLAY_SCRIPT)
        for start in range(0, len(todo), 200):
            chunk = todo[start : start + 200]
            pipe = client.pipeline(transaction=False)
            for letter in chunk:
                args: list[str | bytes] = [letter.id]
                for k, v in letter.raw_fields:
                    args += (k, v)
                script(keys=[names.DLQ_STREAM, letter.meta["dlq_stream"]], args=args, client=pipe)
            for letter, new_id in zip(chunk, pipe.execute(), strict=True):
                if new_id:
                    outcome.replayed.append((letter.id, f"{letter.meta['dlq_stream']}/{_text(new_id)}"))
                else:
                    outcome.skipped.append((letter.id, "already gone from the DLQ (replayed concurrently?)"))
    finally:
        client.close()
    log.info("DLQ replay: %d replayed, %d skipped", len(outcome.replayed), len(outcome.skipped))
    return outcome


# ---------------------------------------------------------------------------------------- DLT (Kafka)
def _headers(msg: Message) -> dict[str, str]:
    raw: Any = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw  # a consumer returns a list of pairs
    return {str(k): _text(v) for k, v in pairs}


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
            settings, f"barcode-dlq-tool-{uuid.uuid4().hex[:8]}", **{"enable.partition.eof": True}
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
    if reason:
        letters = [x for x in letters if reason.lower() in x.reason.lower()]
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
        if reason:
            letters = [x for x in letters if reason.lower() in x.reason.lower()]
    else:
        letters = read_dlt(settings, topic=topic)
        if reason:
            letters = [x for x in letters if reason.lower() in x.reason.lower()]
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
            headers=[(REPLAYED_FROM_HEADER, f"{topic}/{letter.id.replace(':', '/')}".encode())],
            on_delivery=reporter(letter.id),
        )
    remaining = producer.flush(settings.produce_timeout_s + 5)
    if remaining or failures:
        raise DeliveryError(
            f"{remaining} record(s) not confirmed; failures: {failures[:5]} (replaying again is safe)",
            component="kafka",
        )
    outcome.replayed = [(x.id, placed.get(x.id, target)) for x, _ in valid]
    log.info("DLT replay: %d replayed, %d skipped", len(outcome.replayed), len(outcome.skipped))
    return outcome


# ---------------------------------------------------------------------------------------- both
def list_letters(
    settings: Settings, source: Source, *, since_ms: int | None = None, limit: int | None = 100,
    reason: str | None = None,
) -> list[DeadLetter]:  # fmt: skip
    if source == "dlq":
        return list_dlq(settings, since_ms=since_ms, limit=limit, reason=reason)
    return list_dlt(settings, since_ms=since_ms, limit=limit, reason=reason)


def get_letter(settings: Settings, source: Source, letter_id: str) -> DeadLetter | None:
    return get_dlq(settings, letter_id) if source == "dlq" else get_dlt(settings, letter_id)


def replay(
    settings: Settings,
    source: Source,
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> ReplayOutcome:
    """Replay from either store (see :func:`replay_dlq` and :func:`replay_dlt`)."""
    if source == "dlq":
        return replay_dlq(
            settings, ids=ids, reason=reason, everything=everything, dry_run=dry_run, force=force
        )
    return replay_dlt(settings, ids=ids, reason=reason, everything=everything, dry_run=dry_run)
