"""The raw ceilings the pipeline cannot beat, measured on the same servers in the same run.

* Kafka: a paced ``acks=all`` idempotent produce round trip with ingest's producer settings (its p99
  compares with ingest's at that rate), and one producer's throughput sending as fast as it can.
* MariaDB: 500-row INSERT + COMMIT into a scratch copy of ``barcodes``, the statements built before the
  clock starts, so the figure is the server's and not Python's (the workers pay the building on top).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.cimpl import NewTopic

from barcode_harness.bench.histogram import LatencyHistogram
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.db.queries import Row, insert_barcodes_sql, insert_barcodes_statements
from barcode_pipeline.errors import DeliveryError

log = logging.getLogger(__name__)

PROBE_TOPIC = "bench.produce-ceiling"
SCRATCH_TABLE = "bench_insert_ceiling"
WARM_UP_S = 1.0
# About the size of one scan event on the wire (JSON as ingest produces it).
SCAN_PAYLOAD = (
    b'{"barcode":"8801234567893","deviceId":"SEOUL-CENTER-PC-001","scanTime":1760000000000,'
    b'"scanId":"lg-0123abcd-0-000000001","receivedTime":1760000000001}'
)


@dataclass(frozen=True)
class KafkaLatency:
    rate: float
    duration_s: float
    sent: int
    failed: int
    latency: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms" if k == "latency" else k: v for k, v in asdict(self).items()}


def ensure_topic(settings: HarnessSettings, topic: str, partitions: int) -> None:
    """Create a bench topic (the stack's replication factor) unless it exists with ``partitions``."""
    admin = kafka_adapter.admin(settings)
    if (found := admin.list_topics(timeout=10).topics.get(topic)) is not None:
        if (has := len(found.partitions)) != partitions:  # left behind by a run with other settings
            why = f"{topic} has {has} partitions, this run needs {partitions}: delete the topic and run again"
            raise DeliveryError(why, component="kafka")
        return
    try:
        admin.create_topics([NewTopic(topic, partitions, settings.kafka.topic_replication)],
                            request_timeout=15)[topic].result(15)  # fmt: skip
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise DeliveryError(f"cannot create {topic}: {exc}", component="kafka") from exc


def _probe_producer(settings: HarnessSettings, **extra: Any) -> Producer:
    """A producer with ingest's settings (and ``extra``), its probe topic created if missing."""
    ensure_topic(settings, PROBE_TOPIC, settings.kafka.topic_partitions)
    return Producer(kafka_adapter.producer_config(settings, log_level=3, **extra))


def drop_probe_topic(settings: HarnessSettings, topics: tuple[str, ...] = (PROBE_TOPIC,)) -> None:
    """Best effort: a probe topic left behind is reused by the next probe (a CI run's busy broker
    once took over 15 s to answer the deletion, and the whole benchmark failed on it)."""
    admin = kafka_adapter.admin(settings)  # held: its futures fail once the client is gone
    try:
        for future in admin.delete_topics(list(topics), request_timeout=15).values():
            future.result(15)
    except (KafkaException, TimeoutError) as exc:
        log.info("probe topics %s not deleted: %r", topics, exc)


def paced_round_trips(
    producer: Producer,
    topic: str,
    *,
    rate: float,
    warm: int,
    count: int,
    key: Callable[[int], bytes],
    at_window: Callable[[], None] | None = None,
) -> tuple[LatencyHistogram, int]:
    """``warm`` then ``count`` messages, one every ``1/rate`` s; the last ``count`` are timed from the
    produce() call to the delivery report, seen by a poller thread in ``poll()`` (GIL released) as soon
    as librdkafka has it, as ingest's bridge sees it. ``at_window`` runs once before the timed ones (its
    own time is left out of the pacing). Returns the round trips and the failed count."""
    hist, failed = LatencyHistogram(), [0]
    lock, stop = threading.Lock(), threading.Event()

    def report(sent_ns: int, err: KafkaError | None, _msg: Message) -> None:
        with lock:
            if err is None:
                hist.record_us((time.perf_counter_ns() - sent_ns) // 1000)
            else:
                failed[0] += 1

    def poll() -> None:
        while not stop.is_set():
            producer.poll(0.05)

    poller = threading.Thread(target=poll, name="probe-poll", daemon=True)
    poller.start()
    start = time.perf_counter()
    try:
        for k in range(warm + count):
            if k == warm and at_window is not None:
                paused = time.perf_counter()
                at_window()
                start += time.perf_counter() - paused
            time.sleep(max(0.0, start + k / rate - time.perf_counter()))
            timed = functools.partial(report, time.perf_counter_ns()) if k >= warm else None
            producer.produce(topic, SCAN_PAYLOAD, key=key(k), on_delivery=timed)
        producer.flush(30)
    finally:
        stop.set()
        poller.join(5)
    return hist, failed[0]


def kafka_produce_latency(settings: HarnessSettings, *, rate: float, duration_s: float) -> KafkaLatency:
    """The paced round trip with ingest's producer settings (:func:`paced_round_trips`)."""
    producer = _probe_producer(settings)
    # warm up: metadata and connections to every partition leader
    for i in range(settings.kafka.topic_partitions * 4):
        producer.produce(PROBE_TOPIC, SCAN_PAYLOAD, key=str(i).encode())
    producer.flush(15)
    n = int(rate * duration_s)
    hist, failed = paced_round_trips(
        producer, PROBE_TOPIC, rate=rate, count=n, key=lambda k: f"dev-{k % 3}".encode(),
        warm=int(rate * WARM_UP_S),  # a fresh topic's first second is slow (leaders, connections)
    )  # fmt: skip
    return KafkaLatency(rate, duration_s, n, failed, hist.summary().to_dict())


def kafka_produce_throughput(settings: HarnessSettings, *, duration_s: float) -> dict[str, Any]:
    """Messages/s one producer gets confirmed (acks=all, idempotent) when it sends without pause."""
    producer = _probe_producer(settings, **{"linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    confirmed: Counter[bool] = Counter()  # True: confirmed, False: failed

    def report(err: KafkaError | None, _msg: Message) -> None:
        confirmed[err is None] += 1

    start = time.perf_counter()
    end = start + duration_s
    sent = 0
    while time.perf_counter() < end:
        for _ in range(1000):
            try:
                key = f"dev-{sent % 3}".encode()
                producer.produce(PROBE_TOPIC, SCAN_PAYLOAD, key=key, on_delivery=report)
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - start
    return {
        "duration_s": round(elapsed, 3),
        "sent": sent,
        "confirmed": confirmed[True],
        "failed": confirmed[False],
        "messages_per_s": round(confirmed[True] / elapsed, 1) if elapsed > 0 else 0.0,
        "payload_bytes": len(SCAN_PAYLOAD),
    }


def _connect(settings: HarnessSettings) -> Any:
    """A connection as the workers open theirs: explicit transactions, a UTC session."""
    return db.connect(settings.db.url, autocommit=False, init_command="SET time_zone = '+00:00'")


@contextlib.contextmanager
def _scratch_table(settings: HarnessSettings, table: str) -> Iterator[Any]:
    """A connection and an empty ``table`` shaped like ``barcodes``, dropped afterwards."""
    with contextlib.closing(_connect(settings)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} LIKE barcodes")
        yield conn
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")


def _commit_each(conn: Any, hist: LatencyHistogram, statements: Iterable[tuple[str, Any]]) -> None:
    """Execute and COMMIT each ``(sql, args)`` on its own, recording how long each took."""
    with conn.cursor() as cur:
        for sql, args in statements:
            t = time.perf_counter()
            cur.execute(sql, args)
            conn.commit()
            hist.record_s(time.perf_counter() - t)


def _row(n: int, token: str, now_ms: int) -> Row:
    """Scratch row ``n``, shaped like a worker's, on one of three devices."""
    device, center = f"SEOUL-CENTER-PC-00{n % 3 + 1}", f"CENTER-{n % 3 + 1}"
    ids = (f"DLV-{device}-251125-{token}{n:016d}", f"ceil-{token}-{n}", f"880{n:010d}")
    return (*ids, center, device, now_ms, now_ms, None)


def bare_insert(settings: HarnessSettings, *, rows: int, batch_rows: int = 500) -> dict[str, Any]:
    """Rows/s of pre-built 500-row INSERT + COMMIT on as many connections in parallel as there are workers."""
    conns = settings.worker.count
    token = f"{int(time.time()) % 100000:05d}"
    now_ms = int(time.time() * 1000)
    batches = max(conns, rows // batch_rows)
    hists = [LatencyHistogram() for _ in range(conns)]
    with _scratch_table(settings, SCRATCH_TABLE) as admin:
        quote = db.string_escaper(admin)
        statements: list[tuple[str, Any]] = []  # built as the workers build theirs, before the timed part
        for b in range(batches):
            batch = [_row(n, token, now_ms) for n in range(b * batch_rows, (b + 1) * batch_rows)]
            statements += [(sql, None) for sql in insert_barcodes_statements(batch, quote, SCRATCH_TABLE)]

        def run(share: int) -> None:
            with contextlib.closing(_connect(settings)) as conn:
                _commit_each(conn, hists[share], statements[share::conns])

        start = time.perf_counter()
        with ThreadPoolExecutor(conns) as pool:
            list(pool.map(run, range(conns)))  # re-raises a connection's error
        elapsed = time.perf_counter() - start
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {SCRATCH_TABLE}")
            (stored,) = cur.fetchone()
    for other in hists[1:]:
        hists[0].add(other)
    total = batches * batch_rows
    return {
        "rows": total,
        "stored": int(stored),
        "batch_rows": batch_rows,
        "connections": conns,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
        "batch_latency_ms": hists[0].summary().to_dict(),
    }


def commit_latency(settings: HarnessSettings, *, commits: int = 300) -> dict[str, Any]:
    """Latency of one single-row INSERT + COMMIT, one after another: what the legacy path pays per scan
    (with ``innodb_flush_log_at_trx_commit=1`` mostly the storage's fsync time: why the paths differ so)."""
    table = f"{SCRATCH_TABLE}_commit"
    hist = LatencyHistogram()
    with _scratch_table(settings, table) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT @@innodb_flush_log_at_trx_commit")
            (flush_setting,) = cur.fetchone()
        now = datetime.now(UTC).replace(tzinfo=None)
        sql = insert_barcodes_sql(table)
        probe = ("8801234567893", "CENTER-1", "SEOUL-CENTER-PC-001", now, now, None)
        _commit_each(conn, hist, ((sql, (f"commit-probe-{n}", f"p-{n}", *probe)) for n in range(commits)))
    return {
        "commits": commits,
        "innodb_flush_log_at_trx_commit": int(flush_setting),
        "latency_ms": hist.summary().to_dict(),
    }
