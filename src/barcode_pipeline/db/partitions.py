"""Daily partitions of ``barcodes``: created ahead of time, dropped once older than the retention.

At 1,000 scans/s the table grows by about 30 GB a day, so it is partitioned by the UTC day of
``scan_time`` (``RANGE COLUMNS``): dropping a day is a metadata operation that frees its disk at
once, where a ``DELETE`` of 86 M rows would take hours and leave the space inside the tablespace.
There is deliberately no catch-all ``MAXVALUE`` partition: partitions are created
``db_partitions_ahead_days`` ahead, and a scan whose day has none (the maintenance stopped for
that long) is refused by the server; the workers dead-letter it with cause ``no_partition`` and
``dlq replay`` stores it once the partition exists. A scan older than the oldest partition goes into
the oldest one, and leaves with it.

Run by ``barcode-pipeline run`` (one node at a time, under a Redis lock, every
``db_partition_interval_s``), by ``barcode-pipeline db partitions [--dry-run]``, and by the
migration that partitions the table (``0004``), which creates the first ones.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pymysql

from barcode_pipeline.adapters.db import connect
from barcode_pipeline.db.queries import BARCODES_TABLE, FIRST_SCANS_TABLE
from barcode_pipeline.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

_NAME = re.compile(r"p(\d{8})")
LIST_PARTITIONS = (
    "SELECT partition_name FROM information_schema.partitions"
    " WHERE table_schema = DATABASE() AND table_name = %s AND partition_name IS NOT NULL"
)
PURGE_BATCH = 10_000


def partition_name(day: date) -> str:
    """``p20261206``: the partition of the scans of that UTC day."""
    return f"p{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    match = _NAME.fullmatch(name)
    return datetime.strptime(match[1], "%Y%m%d").date() if match else None


def partition_clause(day: date) -> str:
    return f"PARTITION {partition_name(day)} VALUES LESS THAN ('{day + timedelta(days=1):%Y-%m-%d}')"


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class Plan:
    """What one maintenance round does."""

    add: list[date] = field(default_factory=list)  # new days, in order, above the highest
    drop: list[str] = field(default_factory=list)  # partitions wholly older than the retention
    keep: int = 0  # partitions left as they are

    @property
    def empty(self) -> bool:
        return not self.add and not self.drop

    def describe(self) -> str:
        first, last = (partition_name(self.add[0]), partition_name(self.add[-1])) if self.add else ("", "")
        added = f"add {first}..{last}" if self.add else "add none"
        dropped = f"drop {', '.join(self.drop)}" if self.drop else "drop none"
        return f"{added}; {dropped}; keep {self.keep}"


def plan(existing: Sequence[str], today: date, *, ahead_days: int, retention_days: int) -> Plan:
    """Partitions to add (up to ``today + ahead_days``) and to drop (every scan older than
    ``today - retention_days``); never drops the partition of today or a later day."""
    known = sorted(d for d in (day_of(n) for n in existing) if d is not None)
    horizon = today + timedelta(days=ahead_days)
    # after a long stop, no partitions for the missed days: today's takes their scans (it is the
    # next range above), and leaves with them when its own day passes the retention
    start = max(known[-1] + timedelta(days=1), today) if known else today
    add = days(start, horizon) if start <= horizon else []
    cutoff = today - timedelta(days=retention_days)
    drop = [partition_name(d) for d in known if d < cutoff and d < today]
    if drop and len(drop) == len(known) and not add:
        drop = drop[:-1]  # a partitioned table keeps at least one partition
    return Plan(add, drop, len(known) - len(drop))


def existing(cur: Any, table: str = BARCODES_TABLE) -> list[str]:
    cur.execute(LIST_PARTITIONS, (table,))
    return [str(row[0]) for row in cur.fetchall()]


def apply(cur: Any, todo: Plan, table: str = BARCODES_TABLE) -> None:
    """ADD first (a table never loses its last partition), then DROP; each is one ALTER TABLE."""
    if todo.add:
        cur.execute(f"ALTER TABLE {table} ADD PARTITION ({', '.join(partition_clause(d) for d in todo.add)})")
    if todo.drop:
        cur.execute(f"ALTER TABLE {table} DROP PARTITION {', '.join(todo.drop)}")


def purge_first_scans(cur: Any, cutoff: date) -> int:
    """Under the ``barcode`` policy, first scans older than the retention go with their rows."""
    removed = 0
    while True:
        cur.execute(f"DELETE FROM {FIRST_SCANS_TABLE} WHERE scan_time < %s LIMIT {PURGE_BATCH}", (cutoff,))
        count = int(cur.rowcount)
        removed += count
        if count < PURGE_BATCH:
            return removed


def maintain(
    db_url: str, *, ahead_days: int, retention_days: int, dry_run: bool = False, today: date | None = None
) -> Plan:
    """One maintenance round on the URL's database; raises ``DatabaseUnavailable``."""
    today = today or datetime.now(UTC).date()
    try:
        conn = connect(db_url, autocommit=True)
    except (pymysql.err.MySQLError, OSError) as exc:
        raise DatabaseUnavailable(f"partition maintenance cannot connect: {exc}", component="db") from exc
    try:
        with conn.cursor() as cur:
            todo = plan(existing(cur), today, ahead_days=ahead_days, retention_days=retention_days)
            if dry_run:
                return todo
            apply(cur, todo)
            purged = purge_first_scans(cur, today - timedelta(days=retention_days))
        if not todo.empty or purged:
            log.info("partitions of %s: %s; %d first scans purged", BARCODES_TABLE, todo.describe(), purged)
        return todo
    except pymysql.err.MySQLError as exc:
        raise DatabaseUnavailable(f"partition maintenance failed: {exc}", component="db") from exc
    finally:
        conn.close()


def initial_partitions(cur: Any, *, ahead_days: int) -> str:
    """The partition list for the migration that partitions ``barcodes``: one a day from its oldest
    scan (today if empty) to ``ahead_days`` ahead, so every existing row has its partition."""
    cur.execute(f"SELECT DATE(MIN(scan_time)) FROM {BARCODES_TABLE}")
    oldest = cur.fetchone()[0]
    today = datetime.now(UTC).date()
    first = min(oldest, today) if isinstance(oldest, date) else today
    return ", ".join(partition_clause(d) for d in days(first, today + timedelta(days=ahead_days)))
