"""Worker throughput: drain a pre-filled stream backlog with N real worker processes.

Not a test (pytest does not collect it). Uses its own database and Redis DB, never ``barcode``:

    .venv/bin/python -m tests.worker.bench_throughput --entries 100000 --workers 1
    .venv/bin/python -m tests.worker.bench_throughput --entries 100000 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.processor.routing import shard_of
from tests.stack_helpers import redis_db

log = logging.getLogger("bench")
DEVICES = [f"BENCH-PC-{i:03d}" for i in range(100)]


def prepare(settings: Settings, entries: int) -> None:
    migrate.drop_database(settings.db.url)
    migrate.create_database(settings.db.url)
    migrate.upgrade(settings.db.url)
    conn = connect(settings.db.url, autocommit=True)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_center_mapping (device_id, center_id, center_name) VALUES (%s, %s, %s)",
            [(d, f"CENTER-{i % 3 + 1}", f"Seoul Center {i % 3 + 1}") for i, d in enumerate(DEVICES)],
        )
    conn.close()
    r = redis.Redis.from_url(settings.redis.url)
    r.flushdb()
    for stream in names.all_streams(settings.streams.shards):
        r.xgroup_create(stream, names.WORKER_GROUP, id="0", mkstream=True)
    tag = uuid.uuid4().hex[:10]
    now = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    for i in range(entries):
        device = DEVICES[i % len(DEVICES)]
        scan = StoredScan(f"DLV-{device}-261125-{tag}{i:016d}", f"{tag}-{i}", f"88{i:011d}", device,
                          now - 60_000 + i % 60_000, now)  # fmt: skip
        pipe.xadd(names.stream_name(shard_of(device, settings.streams.shards)), scan.to_fields())
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    r.close()


def count_rows(db_url: str) -> tuple[int, float]:
    conn = connect(db_url, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(saved_time), MAX(saved_time)) FROM barcodes"
        )
        count, span_us = cur.fetchone()
    conn.close()
    return int(count), float(span_us or 0) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--database", default="bp_bench_worker")
    parser.add_argument("--redis-db", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    base = Settings()
    settings = base.updated(
        {
            "db_url": migrate.database_url(base.db.url, args.database),
            "redis_url": redis_db(base.redis.url, args.redis_db),
            "log_level": "WARNING",
        }
    )
    t0 = time.monotonic()
    prepare(settings, args.entries)
    log.info("prepared %d entries in %.1fs", args.entries, time.monotonic() - t0)
    env = {**os.environ, **settings_env(settings)}
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "barcode_pipeline", "worker", "--name", f"bench-{i}"], env=env
        )
        for i in range(args.workers)
    ]
    try:
        while True:
            count, span = count_rows(settings.db.url)
            if count >= args.entries:
                break
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited")
            time.sleep(0.05)
        wall = time.monotonic() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    count, span = count_rows(settings.db.url)
    log.info(
        "%d workers: %d rows; first-to-last row %.2fs = %.0f rows/s;"
        " wall incl. process start %.2fs = %.0f rows/s",
        args.workers, count, span, count / span, wall, count / wall,
    )  # fmt: skip
    migrate.drop_database(settings.db.url)
    redis.Redis.from_url(settings.redis.url).flushdb()


if __name__ == "__main__":
    main()
