"""The SQL the persistence workers run, next to the migrations that define its tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

BARCODES_TABLE = "barcodes"
FIRST_SCANS_TABLE = "barcode_first_scans"  # policy "barcode": the first scan of each barcode

# Column order of one inserted row; ``saved_time`` is left to the column default (server clock, UTC).
INSERT_COLUMNS = (
    "internal_barcode_id",
    "scan_id",
    "original_barcode",
    "center_id",
    "device_id",
    "scan_time",
    "processed_time",
    "dedup_barcode",
)

# One row in ``INSERT_COLUMNS`` order; the two times are epoch ms (UTC).
Row = tuple[str, str, str, str, str, int, int, str | None]

# Well below every server's max_allowed_packet (MariaDB 16 MiB, MySQL 8 64 MiB by default), like
# PyMySQL's own executemany limit.
MAX_STATEMENT_BYTES = 1_000_000

_ON_DUPLICATE = " ON DUPLICATE KEY UPDATE internal_barcode_id = internal_barcode_id"

SELECT_CENTERS = "SELECT device_id, center_id FROM device_center_mapping"

# Policy "barcode" (worker/storage.py): the first scan of a barcode claims it; later ones are no-ops.
CLAIM_FIRST_SCANS = (
    f"INSERT INTO {FIRST_SCANS_TABLE} (barcode, internal_barcode_id, scan_time) VALUES (%s, %s, %s)"
    " ON DUPLICATE KEY UPDATE barcode = barcode"
)
SELECT_FIRST_SCANS = (
    f"SELECT barcode, internal_barcode_id FROM {FIRST_SCANS_TABLE} WHERE barcode IN ({{marks}})"
)


def insert_barcodes_sql(table: str = BARCODES_TABLE) -> str:
    """A single-row ``INSERT ... VALUES (%s, ...)`` template (the legacy path, the bench ceilings).

    PyMySQL's ``executemany`` rewrites this shape into one multi-row statement; the workers build
    theirs with :func:`insert_barcodes_statements` instead, which is cheaper per row.

    ``ON DUPLICATE KEY UPDATE internal_barcode_id = internal_barcode_id`` turns a row that hits a
    UNIQUE index (a redelivered entry, or a barcode already stored under policy ``barcode``) into a
    no-op that reports 0 affected rows, while a new row reports 1; unlike ``INSERT IGNORE`` it does
    not downgrade truncation, bad values or NULL violations to warnings.
    """
    marks = ", ".join(["%s"] * len(INSERT_COLUMNS))
    return f"{_insert_head(table)}({marks}){_ON_DUPLICATE}"


def _insert_head(table: str) -> str:
    return f"INSERT INTO {table} ({', '.join(INSERT_COLUMNS)}) VALUES "


def insert_barcodes_statements(
    rows: Sequence[Row], quote: Callable[[str], str], table: str = BARCODES_TABLE
) -> Iterator[str]:
    """The multi-row INSERTs that store ``rows``: the statement ``insert_barcodes_sql`` leads to.

    Built here rather than by ``cursor.executemany``: PyMySQL's generic escaping (a type dispatch
    per value, ``datetime`` formatting per time) cost the workers about 9 µs per row, a third of
    their CPU per scan. ``quote`` escapes a string's body for the connection
    (``adapters.db.string_escaper`` follows the server's ``NO_BACKSLASH_ESCAPES`` mode). Times
    become ``'YYYY-MM-DD hh:mm:ss.fff'`` literals, which the UTC session reads like the datetimes
    PyMySQL sent. Each statement stays under ``MAX_STATEMENT_BYTES``.
    """
    head = _insert_head(table)
    seconds: dict[int, str] = {}  # a batch's scans share few distinct seconds

    def moment(ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        text = seconds.get(sec)
        if text is None:
            text = seconds[sec] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        return f"'{text}.{milli:03d}'"

    values: list[str] = []
    size = 0
    for internal_id, scan_id, barcode, center, device, scan_ms, processed_ms, dedup in rows:
        dedup_sql = "NULL" if dedup is None else f"'{quote(dedup)}'"
        value = (
            f"('{quote(internal_id)}','{quote(scan_id)}','{quote(barcode)}','{quote(center)}',"
            f"'{quote(device)}',{moment(scan_ms)},{moment(processed_ms)},{dedup_sql})"
        )
        if values and size + len(value) > MAX_STATEMENT_BYTES:
            yield head + ",".join(values) + _ON_DUPLICATE
            values, size = [], 0
        values.append(value)
        size += len(value) + 1
    if values:
        yield head + ",".join(values) + _ON_DUPLICATE
