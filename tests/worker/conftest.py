"""Fixtures for the persistence worker: a private database and Redis DB, real workers.

Isolation from the other suites sharing the stack: Redis database 3 (flushed per test, never
FLUSHALL) and MariaDB database ``bp_test_worker`` (dropped, re-created and migrated per module);
the shared ``barcode`` database is never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from barcode_pipeline import names
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.domain import StoredScan
from barcode_pipeline.processor.routing import shard_of
from barcode_pipeline.worker.crash import CRASH_AFTER_COMMIT_ENV, CRASH_BEFORE_COMMIT_ENV
from barcode_pipeline.worker.service import Worker, WorkerOptions
from tests.stack_helpers import redis_db

REDIS_DB = 3
TEST_DB = "bp_test_worker"
DEVICES = ("SEOUL-CENTER-PC-001", "SEOUL-CENTER-PC-002", "SEOUL-CENTER-PC-003")


@pytest.fixture(scope="module")
def worker_db_url(stack_settings: Settings) -> Iterator[str]:
    """A fresh, fully migrated database for this test module."""
    url = migrate.database_url(stack_settings.db.url, TEST_DB)
    migrate.drop_database(url)
    migrate.create_database(url)
    migrate.upgrade(url)
    yield url
    migrate.drop_database(url)


class Db:
    """Direct SQL on the test database, for setup and assertions."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = connect(self.url, autocommit=True, init_command="SET time_zone = '+00:00'")
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args or None)
                return list(cur.fetchall())
        finally:
            conn.close()

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM barcodes")[0][0])

    def distinct_ids(self) -> int:
        return int(self.query("SELECT COUNT(DISTINCT internal_barcode_id) FROM barcodes")[0][0])


@dataclass
class Env:
    """One test's world: settings, a binary Redis client on DB 3, the database, started workers."""

    settings: Settings
    redis: redis.Redis
    db: Db
    log_dir: Path
    threads: list[tuple[Worker, threading.Thread]] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # ---- stream input
    def scan(self, i: int, *, device: str | None = None, tag: str | None = None) -> StoredScan:
        device = device or DEVICES[i % len(DEVICES)]
        tag = tag or uuid.uuid4().hex[:10]
        now = int(time.time() * 1000)
        return StoredScan(
            internal_barcode_id=f"DLV-{device}-261125-{tag}{i:016d}",
            scan_id=f"s-{tag}-{i}",
            barcode=f"88{tag}{i:08d}",
            device_id=device,
            scan_time=now - 5000 + i,
            processed_time=now,
        )

    def add(self, scans: list[StoredScan]) -> list[str]:
        """XADD like the processor does (shard by device); returns the entry ids."""
        pipe = self.redis.pipeline(transaction=False)
        for scan in scans:
            pipe.xadd(self.stream_of(scan.device_id), scan.to_fields())
        return [i.decode() for i in pipe.execute()]

    def add_raw(self, fields: dict[Any, Any], *, shard: int = 0) -> str:
        return str(self.redis.xadd(names.stream_name(shard), fields).decode())

    def stream_of(self, device: str) -> str:
        return names.stream_name(shard_of(device, self.settings.streams.shards))

    def many(self, n: int) -> list[StoredScan]:
        tag = uuid.uuid4().hex[:10]
        return [self.scan(i, tag=tag) for i in range(n)]

    # ---- group state
    def pending(self, consumer: str | None = None) -> int:
        total = 0
        for stream in names.all_streams(self.settings.streams.shards):
            try:
                summary = self.redis.xpending(stream, names.WORKER_GROUP)
            except redis.ResponseError:
                continue
            for c in summary["consumers"]:
                if consumer is None or c["name"].decode() == consumer:
                    total += int(c["pending"])
        return total

    def consumers(self) -> set[str]:
        found: set[str] = set()
        for stream in names.all_streams(self.settings.streams.shards):
            try:
                found |= {c["name"].decode() for c in self.redis.xinfo_consumers(stream, names.WORKER_GROUP)}
            except redis.ResponseError:
                continue
        return found

    def create_groups(self) -> None:
        for stream in names.all_streams(self.settings.streams.shards):
            self.redis.xgroup_create(stream, names.WORKER_GROUP, id="0", mkstream=True)

    def dlq(self) -> list[dict[str, str]]:
        return [
            {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
            for _id, fields in self.redis.xrange(names.DLQ_STREAM)
        ]

    # ---- workers
    def start(self, name: str, settings: Settings | None = None, **options: Any) -> Worker:
        """An in-process worker on a thread; returns once it handled its own pending entries."""
        worker = Worker(settings or self.settings, WorkerOptions(name=name, **options))
        thread = threading.Thread(target=worker.run, name=f"test-worker-{name}", daemon=True)
        thread.start()
        assert worker.ready.wait(15), f"worker {name} did not start"
        self.threads.append((worker, thread))
        return worker

    def spawn(
        self, name: str, *, crash_before: bool = False, crash_after: bool = False, **overrides: Any
    ) -> subprocess.Popen[bytes]:
        """A real ``barcode-pipeline worker`` process (what the supervisor runs)."""
        env = {**os.environ, **settings_env(self.settings.updated(overrides))}
        env.pop(CRASH_BEFORE_COMMIT_ENV, None)
        env.pop(CRASH_AFTER_COMMIT_ENV, None)
        if crash_before:
            env[CRASH_BEFORE_COMMIT_ENV] = "1"
        if crash_after:
            env[CRASH_AFTER_COMMIT_ENV] = "1"
        log = (self.log_dir / f"{name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "barcode_pipeline", "worker", "--name", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        for worker, _thread in self.threads:
            worker.stop()
        for _worker, thread in self.threads:
            thread.join(20)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def env(
    make_settings: Callable[..., Settings], stack_settings: Settings, worker_db_url: str, tmp_path: Path
) -> Iterator[Env]:
    """Empty Redis DB 3 and empty tables (mapping kept), fast heartbeats; workers stopped afterwards."""
    settings = make_settings(
        redis_url=redis_db(stack_settings.redis.url, REDIS_DB),
        db_url=worker_db_url,
        worker_heartbeat_ttl_s=1.5,
        log_level="INFO",
    )
    client = redis.Redis.from_url(settings.redis.url)
    client.flushdb()
    db = Db(worker_db_url)
    db.query("TRUNCATE TABLE barcodes")
    e = Env(settings=settings, redis=client, db=db, log_dir=tmp_path)
    yield e
    e.stop_all()
    client.flushdb()
    client.close()
