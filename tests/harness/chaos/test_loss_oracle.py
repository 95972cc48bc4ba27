"""The loss oracle itself (chaos/checks.verify), fed scans whose fate is known: it must call a scan
with no row and no dead letter lost, a scan in the DLQ accounted for, a second row a duplicate, and
a row of a scan no client sent an invention.

Every fault scenario's "0 lost, 0 duplicates" rests on this function; a version that could only
ever answer 0 would pass them all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from barcode_harness.chaos import checks
from barcode_pipeline import names
from barcode_pipeline.adapters.db import connect, string_escaper
from barcode_pipeline.config import Settings
from barcode_pipeline.db import migrate
from barcode_pipeline.db.queries import insert_barcodes_statements
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.domain.dead_letter import Cause, DeadLetterRecord
from barcode_pipeline.worker.storage import to_row
from tests.stack_helpers import redis_db

pytestmark = pytest.mark.integration

REDIS_DB = 8  # this module's own database
DEVICE = "ORACLE-PC-001"


@pytest.fixture
def oracle_settings(stack_settings: Settings) -> Iterator[Settings]:
    url = migrate.database_url(stack_settings.db.url, "bp_test_oracle")
    migrate.drop_database(url)
    migrate.create_database(url)
    migrate.upgrade(url)
    settings = stack_settings.updated(
        {"db_url": url, "redis_url": redis_db(stack_settings.redis.url, REDIS_DB)}
    )
    client = redis.Redis.from_url(settings.redis.url)
    client.flushdb()
    yield settings
    client.flushdb()
    client.close()
    migrate.drop_database(url)


def _scan(scan_id: str, copy: int = 0) -> StoredScan:
    now = int(time.time() * 1000)
    return StoredScan(
        internal_barcode_id=f"DLV-{DEVICE}-261206-{scan_id}-{copy}", scan_id=scan_id, barcode="880000000001",
        device_id=DEVICE, scan_time=now - 1000 + copy, processed_time=now,
    )  # fmt: skip


def test_the_oracle_finds_the_lost_scan_the_dead_letter_and_the_duplicate(oracle_settings: Settings) -> None:
    since_ms = int(time.time() * 1000) - 1000
    conn = connect(oracle_settings.db.url, autocommit=True, init_command="SET time_zone = '+00:00'")
    try:
        # "twice": a second row; "invented": a row of a scan nobody sent
        scans = (_scan("stored"), _scan("twice", 0), _scan("twice", 1), _scan("invented"))
        rows = [to_row(s, "CENTER-1", "event") for s in scans]
        with conn.cursor() as cur:
            for statement in insert_barcodes_statements(rows, string_escaper(conn)):
                cur.execute(statement)
    finally:
        conn.close()
    dead = _scan("dead")
    letter = DeadLetterRecord(
        stream=names.stream_name(0), entry_id="1-0", cause=Cause.INVALID, reason="invalid: a test's letter",
        deliveries=1, consumer="oracle-test", time_ms=since_ms + 500,
        original=tuple((k.encode(), v) for k, v in dead.to_fields().items()),
    )  # fmt: skip
    client = redis.Redis.from_url(oracle_settings.redis.url)
    client.xadd(names.DLQ_STREAM, letter.to_fields())
    client.close()

    acknowledged = [(DEVICE, sid) for sid in ("stored", "twice", "dead", "never-stored")]
    sent = {*acknowledged, (DEVICE, "sent-never-acknowledged")}
    ledger = checks.verify(oracle_settings, acknowledged, since_ms, sent=sent)
    assert (ledger.acknowledged, ledger.stored, ledger.dead_lettered, ledger.lost) == (4, 2, 1, 1)
    assert ledger.lost_sample == ["never-stored"]
    assert ledger.duplicate_rows == 1 and ledger.stray_duplicates == 1
    assert ledger.stored_and_dead == 0 and ledger.dead_without_reason == 0
    assert sum(ledger.dead_letter_reasons.values()) == 1
    assert ledger.never_sent == 1 and ledger.never_sent_sample == [f"{DEVICE}/invented"]
