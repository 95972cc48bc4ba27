"""Prometheus metrics of the legacy baseline.

Besides request latency they split a request's time into the parts a synchronous service spends
waiting: for a pooled connection, and for the COMMIT (a redo-log fsync per request). That split is
what explains the baseline's latency curve in the benchmarks. Multi-process aggregation works like
the ingest service's (``PROMETHEUS_MULTIPROC_DIR`` set by the server before the workers start).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from barcode_pipeline.web.metrics import ServiceMetrics

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


class LegacyMetrics(ServiceMetrics):
    """The legacy service's instruments (one instance per app)."""

    def __init__(self) -> None:
        super().__init__("legacy", LATENCY_BUCKETS)
        target = self._target
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
        self.connections_waiting = Gauge(
            "bp_legacy_db_connections_waiting",
            "Requests waiting for a free pooled DB connection (summed over live processes).",
            registry=target,
            multiprocess_mode="livesum",
        )
        self._error_children: dict[str, Counter] = {}
        for kind in ("unavailable", "other"):  # a series from the start, for dashboards and alerts
            self.db_errors.labels(kind)

    def db_error(self, kind: str) -> None:
        child = self._error_children.get(kind)
        if child is None:
            child = self._error_children[kind] = self.db_errors.labels(kind)
        child.inc()
