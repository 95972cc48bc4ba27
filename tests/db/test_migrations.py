"""Migrations and the schema they create, on the stack's real MariaDB."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pymysql
import pytest

from barcode_pipeline.db import migrate
from tests.db.conftest import query

pytestmark = pytest.mark.integration

ALL = [m.ident for m in migrate.discover()]


def test_upgrade_applies_everything_once_and_is_idempotent(new_database: Callable[[], str]) -> None:
    url = new_database()
    before = migrate.status(url)
    assert before.applied == [] and [m.ident for m in before.pending] == ALL
    assert migrate.upgrade(url) == ALL
    assert migrate.upgrade(url) == []
    after = migrate.status(url)
    assert [a.ident for a in after.applied] == ALL
    assert after.pending == [] and after.modified == [] and after.unknown == []
    assert query(url, "SELECT COUNT(*) FROM device_center_mapping")[0][0] == 3


def test_concurrent_upgrades_apply_each_migration_exactly_once(new_database: Callable[[], str]) -> None:
    url = new_database()
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate.upgrade(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results, key=len) == [[], [], [], ALL]  # one runner did the work, the others waited
    assert query(url, "SELECT COUNT(*) FROM schema_migrations")[0][0] == len(ALL)


def test_a_missing_database_is_a_clear_error(new_database: Callable[[], str]) -> None:
    url = migrate.database_url(new_database(), "bp_test_db_does_not_exist")
    with pytest.raises(migrate.MigrationError, match="Unknown database"):
        migrate.upgrade(url)


def test_cli_upgrade_creates_and_migrates_then_status_is_clean(new_database: Callable[[], str]) -> None:
    url = new_database()
    migrate.drop_database(url)  # --create-database must bring it back
    env = {**os.environ, "BP_DB_URL": url}
    cli = [sys.executable, "-m", "barcode_pipeline", "db"]
    up = subprocess.run(
        [*cli, "upgrade", "--create-database"], env=env, capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 0, up.stderr
    assert "applied: " + ", ".join(ALL) in up.stdout
    again = subprocess.run([*cli, "upgrade"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout
    status = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "pending" not in status.stdout


# ---------------------------------------------------------------------------- the schema itself


def columns(url: str, table: str) -> list[tuple[str, str, str, str | None]]:
    return [
        (str(name), str(ctype), str(nullable), default if default is None else str(default))
        for name, ctype, nullable, default in query(
            url,
            "SELECT column_name, column_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_schema = DATABASE() AND table_name = %s ORDER BY ordinal_position",
            table,
        )
    ]


def indexes(url: str, table: str) -> dict[str, tuple[bool, tuple[str, ...]]]:
    found: dict[str, tuple[bool, list[str]]] = {}
    for name, non_unique, column in query(
        url,
        "SELECT index_name, non_unique, column_name FROM information_schema.statistics"
        " WHERE table_schema = DATABASE() AND table_name = %s ORDER BY index_name, seq_in_index",
        table,
    ):
        found.setdefault(str(name), (int(non_unique) == 0, []))[1].append(str(column))
    return {k: (unique, tuple(cols)) for k, (unique, cols) in found.items()}


def test_barcodes_table_has_the_specified_shape(migrated_db: str) -> None:
    cols = {name: (ctype, nullable) for name, ctype, nullable, _ in columns(migrated_db, "barcodes")}
    assert list(cols) == [
        "id", "internal_barcode_id", "scan_id", "original_barcode", "center_id", "device_id",
        "scan_time", "processed_time", "saved_time", "dedup_barcode",
    ]  # fmt: skip
    assert cols["id"][0].startswith("bigint")
    for name in ("scan_time", "processed_time", "saved_time"):
        assert cols[name] == ("datetime(3)", "NO")
    assert cols["dedup_barcode"] == ("varchar(64)", "YES")
    idx = indexes(migrated_db, "barcodes")
    # partitioned by day of scan_time: every unique key holds the partitioning column
    assert idx["PRIMARY"] == (True, ("id", "scan_time"))
    # one secondary index (migrations 0005, 0006): the duplicate guard, which also serves device +
    # time lookups; the internal ID is a function of these three, so it is unique exactly when the ID is
    assert idx["uk_barcodes_device_scan_id"] == (True, ("device_id", "scan_time", "scan_id"))
    assert len(idx) == 2  # no saved_time index, no all-NULL dedup_barcode index
    names = [str(row[0]) for row in query(
        migrated_db,
        "SELECT partition_name FROM information_schema.partitions"
        " WHERE table_schema = DATABASE() AND table_name = 'barcodes' ORDER BY partition_ordinal_position",
    )]  # fmt: skip
    today = datetime.now(UTC).date()
    assert names[0] == f"p{today:%Y%m%d}" and names[-1] == f"p{today + timedelta(days=8):%Y%m%d}"
    assert len(names) == 9
    engine, collation = query(
        migrated_db,
        "SELECT engine, table_collation FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = 'barcodes'",
    )[0]
    assert engine == "InnoDB" and str(collation).startswith("utf8mb4")


def test_legacy_barcodes_has_the_same_columns_and_the_old_keys(migrated_db: str) -> None:
    """The baseline stays the unpartitioned monolith's table: the same columns, its global keys."""
    assert columns(migrated_db, "legacy_barcodes") == columns(migrated_db, "barcodes")
    strip = {k.replace("legacy_", ""): v for k, v in indexes(migrated_db, "legacy_barcodes").items()}
    assert strip["PRIMARY"] == (True, ("id",))
    assert strip["uk_barcodes_dedup_barcode"] == (True, ("dedup_barcode",))


def test_seeded_device_mapping(migrated_db: str) -> None:
    rows = query(
        migrated_db, "SELECT device_id, center_id, center_name FROM device_center_mapping ORDER BY 1"
    )
    assert rows == [
        ("SEOUL-CENTER-PC-001", "CENTER-1", "Seoul Center 1"),
        ("SEOUL-CENTER-PC-002", "CENTER-2", "Seoul Center 2"),
        ("SEOUL-CENTER-PC-003", "CENTER-3", "Seoul Center 3"),
    ]
    with pytest.raises(pymysql.err.IntegrityError):
        query(migrated_db, "INSERT INTO device_center_mapping (device_id, center_id, center_name)"
                           " VALUES ('SEOUL-CENTER-PC-001', 'X', 'x')")  # fmt: skip


INSERT = (
    "INSERT INTO barcodes (internal_barcode_id, scan_id, original_barcode, center_id, device_id,"
    " scan_time, processed_time, dedup_barcode) VALUES (%s, %s, %s, 'C', 'D', %s, %s, %s)"
)


def test_a_scan_is_unique_by_device_scan_time_and_scan_id_and_a_barcode_may_repeat(migrated_db: str) -> None:
    t = "2026-11-25 01:02:03.456"
    query(migrated_db, INSERT, "ID-1", "ID-1-scan", "B1", t, t, None)
    query(migrated_db, INSERT, "ID-2", "ID-2-scan", "B1", t, t, None)  # a barcode scanned twice: two rows
    with pytest.raises(pymysql.err.IntegrityError):
        query(migrated_db, INSERT, "ID-1", "ID-1-scan", "B3", t, t, None)  # a redelivery: its scan time
    with pytest.raises(pymysql.err.IntegrityError):  # the same scan, its internal ID made in another zone
        query(migrated_db, INSERT, "ID-1-other-day", "ID-1-scan", "B1", t, t, None)
    # policy "barcode": a barcode's first scan is claimed in a table of its own, byte for byte
    claim = "INSERT INTO barcode_first_scans (barcode, internal_barcode_id, scan_time) VALUES (%s, %s, %s)"
    query(migrated_db, claim, "B2", "ID-bc-1", t)
    query(migrated_db, claim, "b2", "ID-bc-3", t)
    with pytest.raises(pymysql.err.IntegrityError):
        query(migrated_db, claim, "B2", "ID-bc-2", t)


def test_times_keep_milliseconds_and_saved_time_defaults_to_utc_now(migrated_db: str) -> None:
    scanned, processed_at = "2026-11-25 01:02:03.456", "2026-11-25 01:02:03.999"
    query(migrated_db, INSERT, "ID-time-1", "ID-time-1-scan", "T1", scanned, processed_at, None)
    scan_time, processed, drift = query(
        migrated_db,
        "SELECT scan_time, processed_time, ABS(TIMESTAMPDIFF(SECOND, saved_time, UTC_TIMESTAMP(3)))"
        " FROM barcodes WHERE internal_barcode_id = 'ID-time-1'",
    )[0]
    assert scan_time.microsecond == 456000 and processed.microsecond == 999000
    assert drift < 5


def test_partitioning_a_filled_table_keeps_every_row_in_its_days_partition(
    new_database: Callable[[], str],
) -> None:
    """Migration 0004 on a table that releases before it filled: every row kept, a partition for each
    day from the oldest scan on, and the old UNIQUE key's duplicates still refused."""
    url = new_database()
    migrate.upgrade(url, before="0004")
    today = datetime.now(UTC).date()
    days_back = [today - timedelta(days=n) for n in (5, 2, 0)]
    for i, day in enumerate(days_back):
        t = f"{day:%Y-%m-%d} 12:00:00.000"
        query(url, INSERT, f"ID-old-{i}", f"ID-old-{i}-scan", f"B{i}", t, t, None)
    assert migrate.upgrade(url)[:2] == ["0004_partition_barcodes", "0005_one_key_per_scan"]
    assert query(url, "SELECT COUNT(*) FROM barcodes")[0][0] == 3
    rows = query(
        url,
        "SELECT partition_name, table_rows FROM information_schema.partitions WHERE table_schema = DATABASE()"
        " AND table_name = 'barcodes' ORDER BY partition_ordinal_position",
    )
    names = [str(name) for name, _ in rows]
    assert names[0] == f"p{days_back[0]:%Y%m%d}" and names[-1] == f"p{today + timedelta(days=8):%Y%m%d}"
    assert len(names) == 5 + 9
    with pytest.raises(pymysql.err.IntegrityError):
        t = f"{days_back[1]:%Y-%m-%d} 12:00:00.000"
        query(url, INSERT, "ID-old-1", "ID-old-1-scan", "B1", t, t, None)  # a redelivery of a migrated row
