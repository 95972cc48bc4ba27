"""Writing a batch to the database: the center lookup cache and one multi-row INSERT per transaction."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pymysql

from barcode_pipeline.adapters.db import DbTimeouts, connect, db_time, parse_db_url, string_escaper
from barcode_pipeline.db.queries import (
    BARCODES_TABLE,
    CLAIM_FIRST_SCANS,
    SELECT_CENTERS,
    SELECT_FIRST_SCANS,
    Row,
    insert_barcodes_statements,
)
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.errors import DatabaseUnavailable
from barcode_pipeline.worker import metrics
from barcode_pipeline.worker.crash import CrashPoints, crash

log = logging.getLogger(__name__)

# Errors that belong to a row (a value the column refuses), as opposed to the connection or server.
ROW_ERRORS = (pymysql.err.DataError, pymysql.err.IntegrityError)
NO_PARTITION = 1526  # ER_NO_PARTITION_FOR_GIVEN_VALUE: the scan's day has no partition (db/partitions.py)


class NoPartition(Exception):
    """A row whose scan day has no partition: the row's fault until the partition exists, so it is
    isolated and dead-lettered (cause ``no_partition``), never retried forever as an outage."""


@dataclass
class WriteOutcome:
    inserted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, Cause, str]] = field(
        default_factory=list
    )  # (index in the batch, cause, reason)

    def merge(self, other: WriteOutcome, offset: int) -> WriteOutcome:
        return WriteOutcome(
            self.inserted + other.inserted,
            self.duplicates + other.duplicates,
            self.rejected + [(i + offset, cause, reason) for i, cause, reason in other.rejected],
        )


def to_row(scan: StoredScan, center_id: str, dedup_policy: Literal["event", "barcode"]) -> Row:
    """Values in ``INSERT_COLUMNS`` order; ``dedup_barcode`` is set only under policy ``barcode``."""
    return (
        scan.internal_barcode_id,
        scan.scan_id,
        scan.barcode,
        center_id,
        scan.device_id,
        scan.scan_time,
        scan.processed_time,
        scan.barcode if dedup_policy == "barcode" else None,
    )


class CenterCache:
    """device_id -> center_id, held in memory: the mapping is tiny and changes rarely.

    A device not in the cache triggers a reload, at most once per ``min_refresh_s``, so a newly
    mapped device is picked up quickly while a flood of scans from an unmapped device costs at
    most one query per interval. The whole table is also reloaded after ``max_age_s`` so that a
    device moved to another center is noticed.
    """

    def __init__(
        self, load: Callable[[], dict[str, str]], *, min_refresh_s: float = 1.0, max_age_s: float = 300.0
    ) -> None:
        self._load = load
        self._min_refresh_s = min_refresh_s
        self._max_age_s = max_age_s
        self._centers: dict[str, str] = {}
        self._loaded_at: float | None = None

    def resolve(self, device_ids: Collection[str], now: float) -> dict[str, str]:
        """The centers of those devices that have one; absent keys are unknown devices."""
        age = float("inf") if self._loaded_at is None else now - self._loaded_at
        missing = any(d not in self._centers for d in device_ids)
        if age >= self._max_age_s or (missing and age >= self._min_refresh_s):
            self._reload(now)
        return {d: self._centers[d] for d in device_ids if d in self._centers}

    def _reload(self, now: float) -> None:
        self._centers = self._load()
        self._loaded_at = now
        log.debug("center mapping loaded: %d devices", len(self._centers))


class BarcodeStore:
    """Owns one DB connection; reconnects lazily after any failure."""

    def __init__(
        self,
        db_url: str,
        *,
        dedup_policy: Literal["event", "barcode"],
        table: str = BARCODES_TABLE,
        crash: CrashPoints | None = None,
        timeouts: DbTimeouts | None = None,
        center_refresh_s: float = 1.0,
    ) -> None:
        self._db_url = db_url
        self.dedup_policy = dedup_policy
        self._table = table
        self._crash = crash or CrashPoints()
        self._timeouts = timeouts or DbTimeouts()
        self._conn: Any = None
        self._centers = CenterCache(self._load_centers, min_refresh_s=center_refresh_s)

    # ------------------------------------------------------------------ connection
    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = connect(
                self._db_url,
                autocommit=False,
                init_command="SET time_zone = '+00:00'",
                # Bounded, so a hung server surfaces as an error instead of a stalled worker.
                timeouts=self._timeouts,
            )
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(pymysql.err.MySQLError, OSError):
                conn.close()

    def _unavailable(self, what: str, exc: BaseException) -> DatabaseUnavailable:
        """Drop the connection (it may be half-way through anything) and describe the failure."""
        metrics.DB_FAILURES.inc()
        self.close()
        hint = (
            "has `barcode-pipeline db upgrade` run?"
            if isinstance(exc, pymysql.err.ProgrammingError)
            else None
        )
        target = parse_db_url(self._db_url)  # name the server: "access denied" alone says not which
        return DatabaseUnavailable(f"{what} ({target.host}:{target.port}): {exc}", component="db", hint=hint)

    # ------------------------------------------------------------------ centers
    def _load_centers(self) -> dict[str, str]:
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                cur.execute(SELECT_CENTERS)
                rows = cur.fetchall()
            conn.rollback()  # end the read snapshot now rather than at the next batch's COMMIT
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._unavailable("loading device_center_mapping failed", exc) from exc
        if not rows:
            # Never a state to store in: the database is being created or restored and not seeded
            # yet. Dead-lettering every scan as "unknown device" would be wrong; wait instead.
            metrics.DB_FAILURES.inc()
            raise DatabaseUnavailable(
                "device_center_mapping is empty",
                component="db",
                hint="map the devices (`db upgrade` seeds the demo ones)",
            )
        return {str(device): str(center) for device, center in rows}

    def centers(self, device_ids: Collection[str]) -> dict[str, str]:
        """The center of every mapped device among ``device_ids``; raises ``DatabaseUnavailable``."""
        return self._centers.resolve(device_ids, time.monotonic())

    # ------------------------------------------------------------------ write
    def write(self, rows: Sequence[Row]) -> WriteOutcome:
        """Store ``rows`` in one transaction; raises ``DatabaseUnavailable`` (nothing is then committed).

        If the server refuses a value (a data or integrity error other than a duplicate key, which
        the statement absorbs), the batch is split in halves until the offending rows are isolated:
        they come back in ``rejected`` and every other row is stored.
        """
        if not rows:
            return WriteOutcome()
        try:
            return self._write_once(rows)
        except (*ROW_ERRORS, NoPartition) as exc:
            self._rollback()
            if len(rows) == 1:
                if isinstance(exc, NoPartition):
                    return WriteOutcome(rejected=[(0, Cause.NO_PARTITION, str(exc))])
                return WriteOutcome(rejected=[(0, Cause.DB_REJECTED, f"rejected by the database: {exc}")])
            log.warning("batch of %d refused (%s); bisecting to isolate the bad rows", len(rows), exc)
            mid = len(rows) // 2
            return self.write(rows[:mid]).merge(self.write(rows[mid:]), offset=mid)

    def _write_once(self, rows: Sequence[Row]) -> WriteOutcome:
        try:
            conn = self._connection()
            started = time.perf_counter()
            affected = 0
            with conn.cursor() as cur:
                stored = self._first_scans(cur, rows) if self.dedup_policy == "barcode" else rows
                for statement in insert_barcodes_statements(stored, string_escaper(conn), self._table):
                    affected += int(cur.execute(statement) or 0)
            if self._crash.before_commit:
                crash("before COMMIT")
            conn.commit()
            metrics.INSERT_SECONDS.observe(time.perf_counter() - started)
        except ROW_ERRORS:
            raise
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == NO_PARTITION:
                raise NoPartition(
                    f"no partition of {self._table} for the scan's day ({exc.args[-1]}): the partitions "
                    "ahead were not created; run `barcode-pipeline db partitions`, then `dlq replay`"
                ) from exc
            raise self._unavailable(f"writing a batch of {len(rows)} failed", exc) from exc
        except (pymysql.err.MySQLError, OSError) as exc:
            raise self._unavailable(f"writing a batch of {len(rows)} failed", exc) from exc
        if self._crash.after_commit:
            crash("after COMMIT, before XACK")
        # With the no-op ON DUPLICATE KEY UPDATE a new row counts 1 and an absorbed duplicate 0.
        return WriteOutcome(inserted=affected, duplicates=len(rows) - affected)

    @staticmethod
    def _first_scans(cur: Any, rows: Sequence[Row]) -> list[Row]:
        """Policy ``barcode``: claim each barcode for its first scan, in the batch's transaction, and
        keep the rows that own their barcode (a redelivered winner owns it still).

        A UNIQUE key on the barcode in ``barcodes`` itself cannot work once the table is partitioned
        by day (a unique key must contain the partitioning column), hence a table of its own.
        """
        cur.executemany(CLAIM_FIRST_SCANS, [(row[2], row[0], db_time(row[5])) for row in rows])
        barcodes = sorted({row[2] for row in rows})
        cur.execute(SELECT_FIRST_SCANS.format(marks=", ".join(["%s"] * len(barcodes))), barcodes)
        owner = {str(barcode): str(internal_id) for barcode, internal_id in cur.fetchall()}
        return [row for row in rows if owner.get(row[2]) == row[0]]

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except (pymysql.err.MySQLError, OSError):
            self.close()
