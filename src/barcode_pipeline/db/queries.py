"""The SQL the persistence workers run, next to the migrations that define its tables."""

from __future__ import annotations

BARCODES_TABLE = "barcodes"

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

SELECT_CENTERS = "SELECT device_id, center_id FROM device_center_mapping"


def insert_barcodes_sql(table: str = BARCODES_TABLE) -> str:
    """A single-row ``INSERT ... VALUES (%s, ...)`` template for ``cursor.executemany``.

    PyMySQL rewrites exactly this shape (one ``VALUES`` tuple of placeholders, optionally followed
    by ``ON DUPLICATE KEY UPDATE``) into one multi-row statement, escaping every value itself.

    ``ON DUPLICATE KEY UPDATE internal_barcode_id = internal_barcode_id`` turns a row that hits a
    UNIQUE index (a redelivered entry, or a barcode already stored under policy ``barcode``) into a
    no-op that reports 0 affected rows, while a new row reports 1; unlike ``INSERT IGNORE`` it does
    not downgrade truncation, bad values or NULL violations to warnings.
    """
    columns = ", ".join(INSERT_COLUMNS)
    marks = ", ".join(["%s"] * len(INSERT_COLUMNS))
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({marks})"
        " ON DUPLICATE KEY UPDATE internal_barcode_id = internal_barcode_id"
    )
