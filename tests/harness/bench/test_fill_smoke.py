"""``bench fill`` on the real MariaDB: rows land in barcodes, spread over the days asked for."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from barcode_pipeline.adapters.db import connect
from barcode_pipeline.cli import app
from barcode_pipeline.config import Settings
from barcode_pipeline.db import migrate

pytestmark = pytest.mark.integration

DATABASE = "bp_test_fill"


def test_fill_appends_rows_spread_over_the_days(stack_settings: Settings) -> None:
    url = migrate.database_url(stack_settings.db.url, DATABASE)
    migrate.drop_database(url)
    try:
        for _ in range(2):  # it appends: a second run adds as many again
            result = CliRunner().invoke(
                app, ["bench", "fill", "--rows", "12000", "--days", "3", "--database", DATABASE,
                      "--log-level", "WARNING"],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert "12,000 rows in" in result.output
        conn = connect(url, autocommit=True, init_command="SET time_zone = '+00:00'")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*), COUNT(DISTINCT DATE(scan_time)) FROM barcodes")
                count, days = cur.fetchone()
                # each day in its own partition, as in a table kept that long
                cur.execute("ANALYZE TABLE barcodes")  # table_rows is InnoDB's estimate: refresh it
                cur.fetchall()
                cur.execute(
                    "SELECT COUNT(*) FROM information_schema.partitions WHERE table_schema = DATABASE()"
                    " AND table_name = 'barcodes' AND table_rows > 0"
                )
                filled_partitions = cur.fetchone()[0]
        finally:
            conn.close()
        assert count == 24000
        assert days >= 3
        assert filled_partitions == days
    finally:
        migrate.drop_database(url)
