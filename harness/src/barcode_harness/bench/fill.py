"""``bench fill``: rows straight into ``barcodes``, outside the pipeline, as fast as the server takes them.

Proving that the table's size does not slow the pipeline needs tens of millions of rows, which the
pipeline would take hours to write. These are shaped like the workers' (the workers' own multi-row
INSERT builder, 5,000 rows a statement), their scan times spread over the last ``days`` days, every
day in a partition of its own. ``bench max --keep-db`` then measures on the filled table.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime
from typing import Any

from barcode_pipeline.adapters.db import connect, string_escaper
from barcode_pipeline.db import partitions
from barcode_pipeline.db.queries import Row, insert_barcodes_statements

log = logging.getLogger(__name__)

DEVICES = 500
BATCH = 5000


def row(i: int, scan_ms: int) -> Row:
    """Row ``i``: shaped like the workers' (an internal ID and a scan ID of the real lengths: the
    scan ID is in the duplicate guard's key, and a center PC's is a 26-character ULID)."""
    device = f"FILL-PC-{i % DEVICES:04d}"
    return (f"DLV-{device}-261206-{i:026d}", f"S{i:025d}", f"88{i:011d}", "CENTER-1", device, scan_ms,
            scan_ms + 150, None)  # fmt: skip


def fill(db_url: str, rows: int, *, days: float) -> dict[str, Any]:
    """Insert ``rows`` rows, scan times spread over the last ``days`` days; returns the rate."""
    conn = connect(db_url, autocommit=True, init_command="SET time_zone = '+00:00'")
    started = time.perf_counter()
    try:
        quote = string_escaper(conn)
        span_ms = days * 86_400_000
        start_ms = int(time.time() * 1000 - span_ms)
        step = span_ms / rows
        with conn.cursor() as cur:
            partitions_back_to(cur, datetime.fromtimestamp(start_ms / 1000, UTC).date())
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM barcodes")  # appending: new IDs after the last
            offset = int(cur.fetchone()[0])
            for first in range(0, rows, BATCH):
                batch = [
                    row(offset + i, int(start_ms + i * step)) for i in range(first, min(rows, first + BATCH))
                ]
                for statement in insert_barcodes_statements(batch, quote):
                    cur.execute(statement)
                if first and first % 1_000_000 == 0:
                    log.info("filled %d of %d rows", first, rows)
    finally:
        conn.close()
    took = time.perf_counter() - started
    return {"rows": rows, "days": days, "seconds": took, "rows_per_s": rows / took if took else 0.0}


def partitions_back_to(cur: Any, first: date) -> None:
    """Split the oldest partition so that every day from ``first`` on has its own, as in a table kept
    for weeks (a new table's start today). REORGANIZE copies only the oldest partition's rows."""
    known = sorted((d, n) for n in partitions.existing(cur) if (d := partitions.day_of(n)) is not None)
    if not known or known[0][0] <= first:
        return
    oldest_day, oldest = known[0]
    clauses = ", ".join(partitions.partition_clause(d) for d in partitions.days(first, oldest_day))
    cur.execute(f"ALTER TABLE barcodes REORGANIZE PARTITION {oldest} INTO ({clauses})")
