"""Unit tests of the pure parts of storage: rows, the INSERT shape, the center cache."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymysql.converters import escape_string

from barcode_pipeline.adapters.db import db_time
from barcode_pipeline.db import queries
from barcode_pipeline.db.queries import INSERT_COLUMNS, insert_barcodes_statements
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.worker.storage import CenterCache, WriteOutcome, to_row

SCAN = StoredScan("DLV-X-261125-01J", "sid", "880", "DEV-1", 1_795_000_000_123, 1_795_000_000_456)


def test_one_statement_holds_every_row_with_escaped_strings_and_utc_times() -> None:
    rows = [to_row(SCAN, "CENTER-1", "event"), to_row(SCAN, "it's \\ here", "barcode")]
    (sql,) = insert_barcodes_statements(rows, escape_string)
    head = f"INSERT INTO barcodes ({', '.join(INSERT_COLUMNS)}) VALUES "
    assert sql.startswith(head)
    assert sql.endswith(" ON DUPLICATE KEY UPDATE internal_barcode_id = internal_barcode_id")
    assert "IGNORE" not in sql.upper()
    values = sql[len(head) : sql.index(" ON DUPLICATE")]
    first = (
        "('DLV-X-261125-01J','sid','880','CENTER-1','DEV-1',"
        "'2026-11-18 11:06:40.123','2026-11-18 11:06:40.456',NULL)"
    )
    assert values.startswith(first + ",")
    assert "'it\\'s \\\\ here'" in values and values.endswith(",'880')")  # dedup_barcode under "barcode"
    assert db_time(SCAN.scan_time).isoformat(sep=" ", timespec="milliseconds") in first


def test_statements_stay_under_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "MAX_STATEMENT_BYTES", 1000)
    rows = [to_row(SCAN, f"CENTER-{i}", "event") for i in range(25)]
    statements = list(insert_barcodes_statements(rows, escape_string))
    assert len(statements) > 1
    assert all(len(s) < 1000 + 300 for s in statements)  # the head and tail come on top of the values
    assert sum(s.count("CENTER-") for s in statements) == 25
    assert list(insert_barcodes_statements([], escape_string)) == []


def test_db_time_is_naive_utc_with_milliseconds() -> None:
    expected = datetime.fromtimestamp(1_795_000_000.123, tz=UTC).replace(tzinfo=None)
    assert db_time(1_795_000_000_123) == expected
    assert expected.microsecond == 123000
    assert db_time(0) == datetime(1970, 1, 1)


def test_row_follows_the_column_order_and_the_dedup_policy() -> None:
    row = to_row(SCAN, "CENTER-1", "event")
    assert len(row) == len(INSERT_COLUMNS)
    values = dict(zip(INSERT_COLUMNS, row, strict=True))
    assert values["center_id"] == "CENTER-1"
    assert values["original_barcode"] == "880"
    assert values["scan_time"] == SCAN.scan_time  # epoch ms; the statement writes it as UTC
    assert values["dedup_barcode"] is None
    assert to_row(SCAN, "CENTER-1", "barcode")[-1] == "880"


def test_outcomes_merge_with_shifted_indices() -> None:
    left = WriteOutcome(inserted=2, duplicates=1, rejected=[(0, Cause.DB_REJECTED, "a")])
    right = WriteOutcome(inserted=1, duplicates=0, rejected=[(1, Cause.NO_PARTITION, "b")])
    expected = [(0, Cause.DB_REJECTED, "a"), (4, Cause.NO_PARTITION, "b")]
    assert left.merge(right, offset=3) == WriteOutcome(3, 1, expected)


class FakeMapping:
    """Stands in for the table: counts loads so the refresh policy is visible."""

    def __init__(self) -> None:
        self.rows = {"DEV-1": "CENTER-1"}
        self.loads = 0

    def __call__(self) -> dict[str, str]:
        self.loads += 1
        return dict(self.rows)


def test_center_cache_loads_once_and_serves_hits_from_memory() -> None:
    table = FakeMapping()
    cache = CenterCache(table, min_refresh_s=1.0, max_age_s=300)
    assert cache.resolve({"DEV-1"}, now=0.0) == {"DEV-1": "CENTER-1"}
    assert cache.resolve({"DEV-1"}, now=50.0) == {"DEV-1": "CENTER-1"}
    assert table.loads == 1


def test_a_miss_reloads_but_at_most_once_per_interval() -> None:
    table = FakeMapping()
    cache = CenterCache(table, min_refresh_s=1.0, max_age_s=300)
    cache.resolve({"DEV-1"}, now=0.0)
    table.rows["DEV-2"] = "CENTER-2"
    assert cache.resolve({"DEV-2"}, now=0.5) == {}  # within the interval: unknown, no query
    assert table.loads == 1
    assert cache.resolve({"DEV-1", "DEV-2"}, now=1.5) == {"DEV-1": "CENTER-1", "DEV-2": "CENTER-2"}
    assert table.loads == 2
    assert cache.resolve({"NOPE"}, now=1.6) == {}
    assert cache.resolve({"NOPE"}, now=1.7) == {}
    assert table.loads == 2


def test_the_whole_mapping_is_reloaded_after_max_age() -> None:
    table = FakeMapping()
    cache = CenterCache(table, min_refresh_s=1.0, max_age_s=300)
    cache.resolve({"DEV-1"}, now=0.0)
    table.rows["DEV-1"] = "CENTER-9"  # the device moved
    assert cache.resolve({"DEV-1"}, now=299.0) == {"DEV-1": "CENTER-1"}
    assert cache.resolve({"DEV-1"}, now=300.0) == {"DEV-1": "CENTER-9"}
