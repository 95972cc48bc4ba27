"""Checking acknowledged scans against the table, with and without a window (ops/verify.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from barcode_pipeline.adapters.db import connect, string_escaper
from barcode_pipeline.db import migrate
from barcode_pipeline.db.queries import insert_barcodes_statements
from barcode_pipeline.ops.verify import ScanWindow, verify_scan_ids

pytestmark = pytest.mark.integration


def _store(url: str, rows: list[tuple[str, str, int]]) -> None:
    """(device, scan id, scan time ms) rows; a repeated scan id on a new internal ID is a duplicate row."""
    conn = connect(url, autocommit=True, init_command="SET time_zone = '+00:00'")
    try:
        quote = string_escaper(conn)
        shaped = [(f"DLV-{d}-{i}", sid, "B", "C", d, ms, ms, None) for i, (d, sid, ms) in enumerate(rows)]
        with conn.cursor() as cur:
            for statement in insert_barcodes_statements(shaped, quote):
                cur.execute(statement)
    finally:
        conn.close()


def test_a_window_finds_the_same_stored_missing_and_duplicates_as_a_full_search(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    migrate.upgrade(url)
    now = int(time.time() * 1000)
    _store(url, [
        ("DEV-A", "s1", now), ("DEV-A", "s2", now + 1), ("DEV-A", "s2", now + 2),  # s2 stored twice
        ("DEV-B", "s3", now + 3), ("DEV-B", "not-acked", now + 4),  # stored, never acknowledged
        ("DEV-A", "old", now - 3_600_000), ("DEV-C", "other", now),  # outside the window
    ])  # fmt: skip
    acked = ["s1", "s2", "s3", "s4"]
    full = verify_scan_ids(url, acked)
    windowed = verify_scan_ids(url, acked, window=ScanWindow(("DEV-A", "DEV-B"), now - 1000))
    for check in (full, windowed):
        assert (check.acknowledged, check.stored, check.missing, check.duplicate_rows) == (4, 3, 1, 1)
        assert check.missing_sample == ["s4"]
    # a scan outside the window is not seen there: the window is the caller's promise
    assert verify_scan_ids(url, ["old"], window=ScanWindow(("DEV-A",), now - 1000)).missing == 1
    assert verify_scan_ids(url, ["old"]).stored == 1
