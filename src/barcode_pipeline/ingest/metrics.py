"""Prometheus metrics of the ingest service.

One :class:`IngestMetrics` per app instance (not module globals), so tests get fresh counters.
With several server processes ``PROMETHEUS_MULTIPROC_DIR`` is set before they start: every
process then writes its samples to files there, and a scrape of any process aggregates them all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

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


def multiprocess_enabled() -> bool:
    return MULTIPROC_ENV in os.environ or MULTIPROC_ENV.lower() in os.environ


class ServiceMetrics:
    """What both HTTP services (ingest, legacy) have: the registry ``/metrics`` renders, and request
    latency by route and status. Subclasses register their own instruments with ``self._target``."""

    def __init__(self, service: str, buckets: tuple[float, ...]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        multiproc = multiprocess_enabled()
        # In multiprocess mode samples live in files and the collector reads them; registering the
        # instruments as well would report this process's share twice.
        self._target = None if multiproc else self.registry
        if multiproc:
            prom_multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.request_seconds = Histogram(
            f"bp_{service}_request_seconds",
            "HTTP request latency, from first byte handled to response sent.",
            ["route", "status"],
            buckets=buckets,
            registry=self._target,
        )
        self._request_children: dict[tuple[str, int], Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Record one request; label children are cached because ``labels()`` costs a lock and a lookup."""
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_seconds.labels(route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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

    def delivery_failed(self, reason: str, count: int = 1) -> None:
        child = self._failure_children.get(reason)
        if child is None:
            child = self._failure_children[reason] = self.delivery_failures.labels(reason)
        child.inc(count)


@contextmanager
def multiprocess_metrics_dir(prefix: str) -> Iterator[Path]:
    """A metrics directory shared by the workers; must be set before they import prometheus_client.

    An operator-provided directory is reused but emptied (prometheus_client requires a clean one
    per run); otherwise a private temporary one is created and removed afterwards.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
