"""Prometheus metrics of the ingest service (the shared base is :mod:`barcode_pipeline.web.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from barcode_pipeline.web.metrics import ServiceMetrics

# Sub-millisecond resolution where the latency target lives (p99 <= a few ms), coarse above.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class IngestMetrics(ServiceMetrics):
    """The ingest service's instruments."""

    def __init__(self) -> None:
        super().__init__("ingest", LATENCY_BUCKETS)
        target = self._target
        self.produce_seconds = Histogram(
            "bp_ingest_produce_seconds",
            "Kafka produce round trip until the delivery report (acks=all) confirmed the write.",
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.kafka_delivery_seconds = Histogram(
            "bp_ingest_kafka_delivery_seconds",
            "librdkafka's own produce latency of each confirmed record (delivery report's latency()).",
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.delivery_failures = Counter(
            "bp_ingest_delivery_failures",
            "Scans Kafka did not confirm, by reason (timeout, rejected, unavailable, queue_full).",
            ["reason"],
            registry=target,
        )
        self.accepted = Counter(
            "bp_ingest_accepted",
            "Scans confirmed by Kafka and answered as accepted.",
            registry=target,
        )
        self._failure_children: dict[str, Counter] = {}
        for reason in ("timeout", "rejected", "unavailable", "queue_full"):  # a series from the start
            self.delivery_failures.labels(reason)
        self.auth_failures = Counter(
            "bp_ingest_auth_failures",
            "Requests refused by authentication, by reason (missing, malformed, unknown, revoked, "
            "forbidden_device, rate_limited, not_loaded, stale).",
            ["reason"],
            registry=target,
        )
        self.key_scans = Counter(
            "bp_ingest_key_scans",
            "Scans accepted, by the name of the key (or trusted network) that sent them; never the secret.",
            ["key"],
            registry=target,
        )
        self.keys_loaded_at = Gauge(
            "bp_ingest_keys_loaded_timestamp_seconds",
            "When this process last reloaded the scanner keys (unix time): time() minus it is the age of "
            "the keys in force, revocations included.",
            registry=target,
            # the stalest live process is the one that matters; a dead one's file is dropped when it
            # is replaced (web/reuseport.py), or its frozen timestamp would page as stale keys
            multiprocess_mode="livemin",
        )
        self.keys_count = Gauge(
            "bp_ingest_keys", "Scanner keys in force (the fewest over the ingest processes).",
            registry=target, multiprocess_mode="livemin",
        )  # fmt: skip
        self.limits_shared = Gauge(
            "bp_ingest_rate_limits_shared",
            "1 while this process's rate-limit counts reach Redis (the limits hold across processes and "
            "hosts); 0 while it counts its own scans only (the lowest over the ingest processes).",
            registry=target, multiprocess_mode="livemin",
        )  # fmt: skip
        self._auth_children: dict[str, Counter] = {}
        self._key_children: dict[str, Counter] = {}

    def delivery_failed(self, reason: str, count: int = 1) -> None:
        child = self._failure_children.get(reason)
        if child is None:
            child = self._failure_children[reason] = self.delivery_failures.labels(reason)
        child.inc(count)

    def auth_failed(self, reason: str) -> None:
        child = self._auth_children.get(reason)
        if child is None:
            child = self._auth_children[reason] = self.auth_failures.labels(reason)
        child.inc()

    def keys_loaded(self, count: int) -> None:
        self.keys_loaded_at.set_to_current_time()
        self.keys_count.set(count)

    def rate_limits_shared(self, shared: bool) -> None:
        self.limits_shared.set(1 if shared else 0)

    def key_accepted(self, key: str, count: int) -> None:
        child = self._key_children.get(key)
        if child is None:
            child = self._key_children[key] = self.key_scans.labels(key)
        child.inc(count)
