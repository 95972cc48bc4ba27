"""A worker facing a Redis that cannot persist (its AOF disk full): ``MISCONF`` on every write.

The worker's XACK is a write, so a batch it has just committed cannot be acknowledged: it must keep
the entries pending and retry (not exit, not dead-letter), and acknowledge them once Redis writes
again. Redis is a scratch server on a 16 MiB tmpfs, filled to the brim; MariaDB is the stack's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from barcode_pipeline import names
from barcode_pipeline.adapters.db import connect, string_escaper
from barcode_pipeline.db.queries import insert_barcodes_statements
from barcode_pipeline.worker.storage import to_row
from tests.stack_helpers import fill_redis_disk, wait_until
from tests.worker.conftest import Env

pytestmark = pytest.mark.integration

SCANS = 200


def _pending(client: redis.Redis, streams: list[str]) -> int:
    total = 0
    for stream in streams:
        try:
            total += int(client.xpending(stream, names.WORKER_GROUP)["pending"])
        except redis.ResponseError:  # no group yet
            continue
    return total


def test_a_committed_batch_stays_pending_until_redis_can_write_its_acknowledgement(
    env: Env, redis_on_small_disk: tuple[str, Path]
) -> None:
    url, data = redis_on_small_disk
    client = redis.Redis.from_url(url)
    settings = env.settings.updated({"redis_url": url})
    streams = names.all_streams(settings.streams.shards)
    scans = env.many(SCANS)
    for stream in streams:  # from the start: the entries below come before the worker
        client.xgroup_create(stream, names.WORKER_GROUP, id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for scan in scans:  # the entries, as the processor writes them
        pipe.xadd(env.stream_of(scan.device_id), scan.to_fields())
    pipe.execute()
    # Hold the worker's batch in the database (a row lock on one of its keys) while the disk fills.
    blocker = connect(env.db.url, autocommit=False, init_command="SET time_zone = '+00:00'")
    with blocker.cursor() as cur:
        held = [to_row(scans[0], "CENTER-1", "event")]
        for statement in insert_barcodes_statements(held, string_escaper(blocker)):
            cur.execute(statement)
    env.start("misconf-1", settings)
    wait_until(lambda: _pending(client, streams) > 0, 15, "the worker to read a batch")
    time.sleep(0.5)  # the read is complete (one XREADGROUP), its batch held by the lock
    batch = _pending(client, streams)
    ballast = fill_redis_disk(client, data)
    blocker.rollback()  # the batch commits now, and its XACK meets MISCONF
    blocker.close()
    wait_until(lambda: env.db.count() == batch, 30, "the batch committed")
    for _ in range(20):  # a few seconds of refused acknowledgements
        assert env.threads[-1][1].is_alive(), "the worker must wait for Redis, not exit"
        assert _pending(client, streams) == batch, "acknowledged while Redis refuses writes?"
        time.sleep(0.15)
    ballast.unlink()  # room again: Redis's next AOF write succeeds and writes are accepted
    wait_until(
        lambda: env.db.count() == SCANS and _pending(client, streams) == 0, 30, "every entry stored and acked"
    )
    assert env.db.count() == SCANS == env.db.distinct_ids()
    assert client.xlen(names.DLQ_STREAM) == 0
    assert env.threads[-1][1].is_alive(), "the same worker went on, without a restart"
    env.stop_all()  # while its Redis still runs: stopped later, the worker would retry its drain for a minute
