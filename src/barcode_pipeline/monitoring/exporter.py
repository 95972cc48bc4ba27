"""The backlog exporter: the pipeline-wide gauges, exported once rather than by every worker.

A background thread runs the backlog probes of probes/backlog.py every ``exporter_interval_s`` (Kafka
lag per partition, stream lengths and undelivered entries, pending per consumer, DLQ size) plus the
Kafka DLT size and the live worker heartbeats. A scrape only reads the last result, so Prometheus,
``top`` and a human with curl never make the probes run more often. ``run`` starts it in its own
process; under systemd it is ``barcode-pipeline monitor exporter``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.probes import backlog as backlog_probe
from barcode_pipeline.web.sideport import serve_side_port

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Bounds:
    """Configured limits, exported beside the measurements so an alert can say "half of the limit"."""

    kafka_retention_s: float
    dlq_max_entries: int

    @classmethod
    def of(cls, settings: Settings) -> Bounds:
        return cls(settings.kafka.topic_retention_hours * 3600, settings.streams.dlq_max_entries)

    def families(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bp_backlog_kafka_retention_seconds",
            "The topic's retention.ms, in seconds",
            self.kafka_retention_s,
        )
        yield GaugeMetricFamily(
            "bp_backlog_dlq_max_entries", "The DLQ's bound (BP_DLQ_MAX_ENTRIES)", float(self.dlq_max_entries)
        )


@dataclass
class Snapshot:
    """One round of probes; ``kafka_up``/``redis_up`` say whether that half could be measured."""

    backlog: backlog_probe.Backlog = field(default_factory=backlog_probe.Backlog)
    dlt_records: int = 0
    workers_alive: list[str] = field(default_factory=list)
    kafka_up: bool = False
    redis_up: bool = False
    probe_seconds: float = 0.0
    taken_at: float = 0.0  # epoch s; 0 = never


def dlt_records(settings: Settings) -> int:
    """Records in the processor's dead-letter topic (retained ones: high minus low watermark)."""
    consumer = Consumer(
        kafka_adapter.consumer_config(settings, f"{settings.processor.group}-probe", log_level=0)
    )
    try:
        meta = consumer.list_topics(names.DLT_TOPIC, timeout=5).topics.get(names.DLT_TOPIC)
        if meta is None or meta.error is not None:
            return 0
        total = 0
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(names.DLT_TOPIC, partition), timeout=5)
            total += max(0, high - low)
        return total
    finally:
        consumer.close()


def live_workers(client: redis.Redis) -> list[str]:
    """Consumers whose heartbeat key has not expired."""
    found: Iterable[str] = client.scan_iter(match=f"{names.HEARTBEAT_PREFIX}*", count=100)
    return sorted(str(key)[len(names.HEARTBEAT_PREFIX) :] for key in found)


def probe(settings: Settings) -> Snapshot:
    """Measure everything once; a component that is down is reported, not raised."""
    started = time.perf_counter()
    snap = Snapshot()
    try:
        positions = backlog_probe.kafka_positions(settings)
        lag = {partition: pos.lag for partition, pos in positions.items()}
        snap.backlog.kafka_lag_by_partition = lag
        snap.backlog.kafka_lag = sum(lag.values())
        ages = backlog_probe.oldest_ages_s(settings, positions)
        snap.backlog.kafka_lag_age_s, snap.backlog.kafka_log_age_s = ages
        snap.dlt_records = dlt_records(settings)
        snap.kafka_up = bool(lag)  # no partitions found = the topic or the broker is not there
    except KafkaException as exc:
        snap.backlog.errors.append(f"kafka: {exc}")
    client = redis_adapter.client(settings, timeout=2.0)
    try:
        backlog_probe.redis_backlog(settings, snap.backlog, client)
        snap.workers_alive = live_workers(client)
        snap.redis_up = True
    except redis.RedisError as exc:
        snap.backlog.errors.append(f"redis: {exc}")
    finally:
        client.close()
    snap.probe_seconds = time.perf_counter() - started
    snap.taken_at = time.time()
    return snap


def metric_families(snap: Snapshot, group: str, bounds: Bounds) -> Iterator[Metric]:
    """The snapshot as Prometheus gauges (names: ``bp_backlog_*``), and the bounds alerts compare with."""
    yield from bounds.families()
    up = GaugeMetricFamily("bp_backlog_probe_up", "1 if the last probe reached the source", labels=["source"])
    up.add_metric(["kafka"], 1.0 if snap.kafka_up else 0.0)
    up.add_metric(["redis"], 1.0 if snap.redis_up else 0.0)
    yield up
    yield GaugeMetricFamily(
        "bp_backlog_probe_seconds", "Duration of the last probe round", snap.probe_seconds
    )
    yield GaugeMetricFamily(
        "bp_backlog_probe_timestamp_seconds", "When the last probe round ended (epoch)", snap.taken_at
    )
    b = snap.backlog
    if snap.kafka_up:
        lag = GaugeMetricFamily(
            "bp_backlog_kafka_lag_records",
            "Records of the topic the processor group has not committed, per partition",
            labels=["group", "partition"],
        )
        for partition, value in sorted(b.kafka_lag_by_partition.items()):
            lag.add_metric([group, str(partition)], float(value))
        yield lag
        yield GaugeMetricFamily(
            "bp_backlog_dlt_records", "Records in the Kafka dead-letter topic", snap.dlt_records
        )
        yield GaugeMetricFamily(
            "bp_backlog_kafka_lag_age_seconds",
            "Age of the oldest record of the topic the processor group has not read (0: none)",
            b.kafka_lag_age_s,
        )
        yield GaugeMetricFamily(
            "bp_backlog_kafka_log_age_seconds",
            "Age of the oldest record retention has kept, in partitions it already trimmed (0: none)",
            b.kafka_log_age_s,
        )
    if snap.redis_up:
        length = GaugeMetricFamily(
            "bp_backlog_stream_length_entries", "Entries in each shard stream", labels=["stream"]
        )
        undelivered = GaugeMetricFamily(
            "bp_backlog_stream_undelivered_entries",
            "Entries of each shard stream no worker has read yet",
            labels=["stream"],
        )
        for stream in sorted(b.stream_length):
            length.add_metric([stream], float(b.stream_length[stream]))
            undelivered.add_metric([stream], float(b.stream_undelivered.get(stream, 0)))
        yield length
        yield undelivered
        pending = GaugeMetricFamily(
            "bp_backlog_pending_entries",
            "Entries read but not acked, per worker (consumer)",
            labels=["consumer"],
        )
        for consumer, value in sorted(b.pending_by_consumer.items()):
            pending.add_metric([consumer], float(value))
        yield pending
        alive = GaugeMetricFamily(
            "bp_backlog_worker_alive", "1 per worker whose heartbeat is live", labels=["worker"]
        )
        for name in snap.workers_alive:
            alive.add_metric([name], 1.0)
        yield alive
        yield GaugeMetricFamily(
            "bp_backlog_workers_alive", "Workers with a live heartbeat", len(snap.workers_alive)
        )
        yield GaugeMetricFamily(
            "bp_backlog_dlq_entries", "Entries in the workers' dead-letter stream", b.dlq_length
        )


class BacklogCollector(Collector):
    """Probes in a thread; ``collect`` serves the latest snapshot."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.latest = Snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="backlog-exporter")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> Snapshot:
        self.latest = probe(self.settings)
        return self.latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # a probe bug must not kill the exporter; the gauges go stale and say so
                log.exception("backlog probe failed")
            self._stop.wait(self.settings.monitoring.exporter_interval_s)

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.latest, self.settings.processor.group, Bounds.of(self.settings))


def serve(settings: Settings) -> tuple[BacklogCollector, ThreadingHTTPServer]:
    """Start probing and serve ``/metrics`` on ``exporter_port`` (loopback); returns both to stop them."""
    registry = CollectorRegistry(auto_describe=False)
    collector = BacklogCollector(settings)
    registry.register(collector)
    collector.start()
    server = serve_side_port(settings.monitoring.exporter_port, registry=registry)
    log.info("backlog exporter on http://127.0.0.1:%d/metrics", settings.monitoring.exporter_port)
    return collector, server
