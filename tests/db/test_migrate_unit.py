"""Unit tests of migration discovery and bookkeeping (no database)."""

from __future__ import annotations

from datetime import datetime

from barcode_pipeline.db import migrate
from barcode_pipeline.db.migrate import AppliedMigration, Migration


def test_migrations_ship_as_package_data_in_version_order() -> None:
    found = migrate.discover()
    assert [m.ident for m in found][:2] == ["0001_create_tables", "0002_seed_device_center_mapping"]
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert all(m.sql.strip() for m in found)


def test_migrations_use_no_mariadb_only_syntax() -> None:
    """MySQL 8 must run them too: no sequences, RETURNING, CREATE OR REPLACE TABLE, JSON defaults..."""
    banned = ("CREATE OR REPLACE", "RETURNING", "SEQUENCE", "IF NOT EXISTS (", "ENGINE=ARIA", "UUID_SHORT")
    for m in migrate.discover():
        upper = m.sql.upper()
        assert not [word for word in banned if word in upper], m.ident
        assert "ENGINE=INNODB" in upper or "CREATE TABLE" not in upper, m.ident


def test_checksum_changes_with_the_text() -> None:
    a = Migration("0001", "x", "SELECT 1;")
    assert a.checksum == Migration("0001", "x", "SELECT 1;").checksum
    assert a.checksum != Migration("0001", "x", "SELECT 2;").checksum


def test_compare_sorts_out_pending_edited_and_unknown() -> None:
    files = [Migration("0001", "a", "A;"), Migration("0002", "b", "B;"), Migration("0003", "c", "C;")]
    when = datetime(2026, 1, 1)
    applied = [
        AppliedMigration("0001", "a", files[0].checksum, when),
        AppliedMigration("0002", "b", "0" * 64, when),
        AppliedMigration("0009", "z", "1" * 64, when),
    ]
    state = migrate._compare(applied, files)
    assert [m.ident for m in state.pending] == ["0003_c"]
    assert state.modified == ["0002_b"]
    assert state.unknown == ["0009_z"]


def test_database_url_swaps_only_the_database() -> None:
    url = "mysql://u:p%40ss@db.example:3307/barcode?unix_socket=/tmp/s"
    assert migrate.database_url(url, "other") == "mysql://u:p%40ss@db.example:3307/other?unix_socket=/tmp/s"
