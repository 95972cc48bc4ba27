"""The old monolith's write path: per request, look up the center, INSERT row by row, COMMIT.

Deliberately unoptimised in the ways the old system was (no mapping cache, one statement per row,
one transaction and so one redo-log fsync per request), because the benchmark measures exactly
that against the asynchronous pipeline. It is not handicapped beyond that: a batch looks each
distinct device up once, and connections are pooled and pre-opened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pymysql

from barcode_pipeline.adapters.db import connect, db_time
from barcode_pipeline.db.queries import INSERT_COLUMNS, insert_barcodes_sql
from barcode_pipeline.domain import ScanEvent, internal_barcode_id
from barcode_pipeline.errors import DatabaseUnavailable, ValidationFailed
from barcode_pipeline.legacy.metrics import LegacyMetrics
from barcode_pipeline.legacy.pool import ConnectionPool

log = logging.getLogger(__name__)

TABLE = "legacy_barcodes"
LOOKUP_SQL = "SELECT center_id FROM device_center_mapping WHERE device_id = %s"
# The workers' statement on the legacy table, so both paths write identical rows: a resent scan hits
# the UNIQUE internal_barcode_id and becomes a no-op (no duplicate, no error; unlike INSERT IGNORE it
# still fails loudly on truncation), and saved_time is the server's clock (column default) on both.
INSERT_SQL = insert_barcodes_sql(TABLE)

# Fails (1146) when a table is missing, reads no row when they exist.
SCHEMA_PROBE_SQL = f"SELECT 1 FROM {TABLE}, device_center_mapping LIMIT 0"


def connection_factory(db_url: str) -> Any:
    """A connect function for the pool: explicit transactions and, as the workers, a UTC session.

    The UTC session makes the ``saved_time`` default (``CURRENT_TIMESTAMP(3)``) UTC like the other columns.
    """

    def open_connection() -> Any:
        return connect(db_url, autocommit=False, init_command="SET time_zone = '+00:00'")

    return open_connection


class LegacyStore:
    """Stores scans synchronously; every method blocks and must run on a worker thread."""

    def __init__(self, pool: ConnectionPool, zone: str, metrics: LegacyMetrics) -> None:
        self._pool = pool
        self._zone = zone
        self._metrics = metrics

    def save(self, events: Sequence[ScanEvent], *, batch: bool) -> None:
        """Look up, insert and commit ``events`` in one transaction; all are stored or none.

        Raises ``ValidationFailed`` (field ``deviceId``, with the index in a batch) for a device that
        has no center, ``PoolTimeout`` when no connection is free in time and ``DatabaseUnavailable`` when
        the database fails for a transient reason (lock wait timeout, deadlock, lost connection).
        """
        if not events:
            return
        waiting = self._metrics.connections_waiting
        waiting.inc()  # the study's picture: request threads blocked on the pool
        queued = True
        try:
            with self._pool.connection(on_wait=self._metrics.pool_wait_seconds.observe) as conn:
                waiting.dec()
                queued = False
                self._metrics.connections_in_use.inc()
                started = time.perf_counter()
                try:
                    self._write(conn, events, batch)
                finally:
                    self._metrics.connections_in_use.dec()
                self._metrics.transaction_seconds.observe(time.perf_counter() - started)
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            raise DatabaseUnavailable(f"database error: {exc}", component="legacy-db") from exc
        finally:
            if queued:  # the pool timed out or failed before lending a connection
                waiting.dec()
        self._metrics.stored.inc(len(events))

    def _write(self, conn: Any, events: Sequence[ScanEvent], batch: bool) -> None:
        with conn.cursor() as cur:
            centers: dict[str, str] = {}
            for index, event in enumerate(events):
                if event.device_id in centers:
                    continue
                cur.execute(LOOKUP_SQL, (event.device_id,))
                row = cur.fetchone()
                if row is None:
                    raise ValidationFailed(
                        f"deviceId {event.device_id!r} is not mapped to a center",
                        field="deviceId",
                        index=index if batch else None,
                    )
                centers[event.device_id] = row[0]
            processed = db_time(int(time.time() * 1000))
            for event in events:
                values = {
                    "internal_barcode_id": internal_barcode_id(
                        event.device_id, event.scan_id, event.scan_time, self._zone
                    ),
                    "scan_id": event.scan_id,
                    "original_barcode": event.barcode,
                    "center_id": centers[event.device_id],
                    "device_id": event.device_id,
                    "scan_time": db_time(event.scan_time),
                    "processed_time": processed,
                    "dedup_barcode": None,
                }
                cur.execute(INSERT_SQL, tuple(values[column] for column in INSERT_COLUMNS))
        started = time.perf_counter()
        conn.commit()
        self._metrics.commit_seconds.observe(time.perf_counter() - started)

    def ping(self, timeout_s: float) -> None:
        """Readiness: borrow a pooled connection (waiting at most ``timeout_s``), check both tables exist.

        Going through the pool (like a Spring DataSource health check) means a saturated pool shows
        as not ready, which is the truth for a client of this service.
        """
        try:
            with self._pool.connection(timeout_s=timeout_s) as conn, conn.cursor() as cur:
                cur.execute(SCHEMA_PROBE_SQL)
                conn.rollback()
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            raise DatabaseUnavailable(f"database error: {exc}", component="legacy-db") from exc
        except pymysql.err.ProgrammingError as exc:
            raise DatabaseUnavailable(
                f"schema not ready: {exc}", component="legacy-db", hint="run `barcode-pipeline db upgrade`"
            ) from exc
