"""Prometheus metrics of the legacy baseline.

Besides request latency they split a request's time into the parts a synchronous service spends
waiting: for a pooled connection, and for the COMMIT (a redo-log fsync per request). That split is
what explains the baseline's latency curve in the benchmarks. Multi-process aggregation works like
the ingest service's (``PROMETHEUS_MULTIPROC_DIR`` set by the server before the workers start).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess

from barcode_pipeline.ingest.metrics import METRICS_CONTENT_TYPE, multiprocess_enabled

__all__ = ["LATENCY_BUCKETS", "METRICS_CONTENT_TYPE", "LegacyMetrics"]

# Wider than ingest's: a blocked legacy request can wait the whole pool timeout (30 s) and more.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class LegacyMetrics:
    """The service's instruments, plus the registry ``/metrics`` renders (one instance per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        multiproc = multiprocess_enabled()
        target = None if multiproc else self.registry
        if multiproc:
            prom_multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.request_seconds = Histogram(
            "bp_legacy_request_seconds",
            "HTTP request latency, from first byte handled to response sent.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.pool_wait_seconds = Histogram(
            "bp_legacy_db_pool_wait_seconds",
            "Time a request waited for a free pooled DB connection (including ones that timed out).",
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.commit_seconds = Histogram(
            "bp_legacy_db_commit_seconds",
            "COMMIT round trip of one request's transaction.",
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.transaction_seconds = Histogram(
            "bp_legacy_db_transaction_seconds",
            "Whole DB work of a request once it had a connection: lookup, INSERTs, COMMIT.",
            buckets=LATENCY_BUCKETS,
            registry=target,
        )
        self.pool_timeouts = Counter(
            "bp_legacy_db_pool_timeouts",
            "Requests answered 503 because no DB connection became free within the pool timeout.",
            registry=target,
        )
        self.db_errors = Counter(
            "bp_legacy_db_errors",
            "Requests that failed on the database, by kind (unavailable, other).",
            ["kind"],
            registry=target,
        )
        self.stored = Counter(
            "bp_legacy_stored",
            "Scans committed (resends of an already stored scan included) and answered as accepted.",
            registry=target,
        )
        self.connections_in_use = Gauge(
            "bp_legacy_db_connections_in_use",
            "Pooled DB connections currently lent to requests (summed over live processes).",
            registry=target,
            multiprocess_mode="livesum",
        )
        self._request_children: dict[tuple[str, int], Histogram] = {}
        self._error_children: dict[str, Counter] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_seconds.labels(route, str(status))
        child.observe(seconds)

    def db_error(self, kind: str) -> None:
        child = self._error_children.get(kind)
        if child is None:
            child = self._error_children[kind] = self.db_errors.labels(kind)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
