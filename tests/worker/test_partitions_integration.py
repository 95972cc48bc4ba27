"""The partitioned table on the real MariaDB: maintenance, and a scan whose day has no partition."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from barcode_pipeline import names
from barcode_pipeline.db import partitions
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.ops import dlq
from barcode_pipeline.run.retention import RetentionKeeper
from barcode_pipeline.worker.storage import BarcodeStore, to_row
from tests.stack_helpers import wait_until
from tests.worker.conftest import Env

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def partition_names(env: Env) -> list[str]:
    return [str(r[0]) for r in env.db.query(
        "SELECT partition_name FROM information_schema.partitions WHERE table_schema = DATABASE()"
        " AND table_name = 'barcodes' ORDER BY partition_ordinal_position"
    )]  # fmt: skip


def test_a_scan_without_a_partition_is_dead_lettered_then_replayed_once_it_has_one(env: Env) -> None:
    late = dataclasses.replace(
        env.scan(1), scan_time=int(time.time() * 1000) + 12 * DAY_MS
    )  # past the horizon
    env.create_groups()
    env.add([late, env.scan(2)])
    env.start("w1")
    wait_until(lambda: len(env.dlq()) == 1, 10, "the dead letter")
    letter = env.dlq()[0]
    assert letter["dlq_cause"] == Cause.NO_PARTITION
    assert "no partition" in letter["dlq_reason"] and "db partitions" in letter["dlq_reason"]
    assert env.db.count() == 1  # the other scan of the batch is stored
    todo = partitions.maintain(env.db.url, ahead_days=13, retention_days=90)  # the operator's fix
    assert len(todo.add) >= 4
    outcome = dlq.replay_dlq(env.settings, everything=True)
    assert len(outcome.replayed) == 1, outcome
    wait_until(lambda: env.db.count() == 2, 10, "the replayed scan stored")


def test_maintenance_adds_ahead_drops_past_retention_and_dry_run_changes_nothing(env: Env) -> None:
    before = partition_names(env)
    today = datetime.now(UTC).date()
    assert before[-1] >= f"p{today + timedelta(days=8):%Y%m%d}"
    later = today + timedelta(days=40)  # forty days on, with a retention of 31
    dry = partitions.maintain(env.db.url, ahead_days=8, retention_days=31, dry_run=True, today=later)
    assert dry.add and dry.drop and partition_names(env) == before
    store = BarcodeStore(env.settings.db.url, dedup_policy="event")
    try:
        old = to_row(env.scan(1), "CENTER-1", "event")  # today's scan: in a partition that will go
        assert store.write([old]).inserted == 1
    finally:
        store.close()
    done = partitions.maintain(env.db.url, ahead_days=8, retention_days=31, today=later)
    assert done.drop == dry.drop and done.add == dry.add
    after = partition_names(env)
    assert after[0] == f"p{later - timedelta(days=31):%Y%m%d}" or after[0] > before[0]
    assert after[-1] == f"p{later + timedelta(days=8):%Y%m%d}"
    assert env.db.count() == 0  # dropped with its day's partition
    assert partitions.maintain(env.db.url, ahead_days=8, retention_days=31, today=later).empty


def test_run_keeps_the_partitions_one_node_at_a_time(env: Env) -> None:
    today = datetime.now(UTC).date()
    last = partitions.day_of(partition_names(env)[-1])
    assert last is not None
    ahead = (last - today).days + 3  # three days past what the table has
    settings = env.settings.updated({"db_url": env.db.url, "db_partitions_ahead_days": ahead})
    keeper = RetentionKeeper(settings)
    env.redis.delete(names.RETENTION_LOCK)
    done = keeper.round()
    assert done is not None and len(done.add) == 3, "the first round adds the days up to the new horizon"
    assert partition_names(env)[-1] == f"p{today + timedelta(days=ahead):%Y%m%d}"
    assert keeper.round() is None  # another round within the lock's time: another node's turn
    env.redis.delete(names.RETENTION_LOCK)
    again = keeper.round()
    assert again is not None and again.empty
