"""The system under test for every ``bench`` command: stack, a bench database, pipeline + legacy.

Why two supervisors: the batching-delay sweep must restart the persistence workers with another
``worker_max_delay_ms`` while ingest, processor and the legacy server keep running (restarting
those would cost seconds of start-up per setting and change nothing measured). So the core
services and the workers are supervised separately; both use :class:`Supervisor` as ``run`` does.

Why a separate database (``bp_bench`` by default, dropped and re-created each run): both paths
write into tables that start empty, so run after run sees the same index sizes, and the
production ``barcode`` database is never filled with benchmark rows. Redis likewise: the bench
commands use Redis database ``BENCH_REDIS_DB``, emptied at the start of each run. Duplicate
markers live for days; left to pile up (millions after a few runs) they made Redis rewrite its
AOF again and again during later runs, each fork pausing it, and series stopped being comparable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from barcode_harness.keys import with_harness_key
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.db.migrate import create_database, database_url, drop_database
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.probes.backlog import Backlog, measure
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.supervisor import ChildSpec, Supervisor, pipeline_specs

log = logging.getLogger(__name__)

LEGACY = "legacy"
ASYNC = "async"
PATHS = (LEGACY, ASYNC)
TABLES = {LEGACY: "legacy_barcodes", ASYNC: "barcodes"}
BENCH_REDIS_DB = 1  # the pipeline's own data is in database 0


def bench_settings(
    settings: HarnessSettings, database: str | None, *, fresh: bool, redis_db: int | None = None
) -> HarnessSettings:
    """The settings pointed at the bench database (and Redis database ``redis_db``, if given).

    Both are emptied by :class:`BenchEnv` when ``fresh``.
    """
    update: dict[str, str] = {}
    if database:
        if database == "barcode" and fresh:
            raise ConfigError("refusing to drop the production database 'barcode'; pick another --database")
        update["db_url"] = database_url(settings.db.url, database)
    if redis_db is not None:
        update["redis_url"] = urlunsplit(urlsplit(settings.redis.url)._replace(path=f"/{redis_db}"))
    return settings.updated(update)


def reset_database(settings: HarnessSettings, *, fresh: bool) -> None:
    if fresh:
        drop_database(settings.db.url)
    create_database(settings.db.url)


def reset_redis(settings: HarnessSettings) -> None:
    """Empty the bench's Redis database; database 0, the pipeline's own, is never flushed."""
    db = redis_adapter.database_of(settings.redis.url)
    if db == 0:
        return
    client = redis_adapter.client(settings)
    try:
        removed = int(client.dbsize())
        client.flushdb()
        log.info("emptied Redis database %d (%d keys)", db, removed)
    except redis.ResponseError as exc:  # e.g. an ACL user without FLUSHDB: the run still goes on
        log.warning("could not empty Redis database %d (%s); earlier runs' keys stay", db, exc)
    finally:
        client.close()


@dataclass
class BenchEnv:
    """Context manager: everything up (migrated, topics created, services ready), then drained and stopped."""

    settings: HarnessSettings
    log_path: Path
    legacy: bool = True
    pipeline: bool = True
    start_stack: bool = True
    fresh_db: bool = True
    ready_timeout_s: float = 90.0
    _core: Supervisor | None = field(default=None, init=False)
    _workers: Supervisor | None = field(default=None, init=False)
    _stack: ExitStack | None = field(default=None, init=False)
    worker_settings: HarnessSettings | None = field(default=None, init=False)

    @property
    def api_key(self) -> str:
        """The key the bench's load generators send to ingest (legacy ignores it)."""
        return self.settings.ingest_api_key

    @property
    def ingest_url(self) -> str:
        return f"http://{self.settings.ingest.host}:{self.settings.ingest.port}"

    @property
    def legacy_url(self) -> str:
        return f"http://{self.settings.legacy.host}:{self.settings.legacy.port}"

    def url(self, path: str) -> str:
        return self.legacy_url if path == LEGACY else self.ingest_url

    def __enter__(self) -> BenchEnv:
        if self.start_stack:
            from barcode_harness.stack.managers import manager_for

            manager_for(self.settings).up(quiet=True)
        reset_database(self.settings, fresh=self.fresh_db)
        if self.fresh_db:
            reset_redis(self.settings)
        self.settings = with_harness_key(self.settings, "bench", start_stack=False)
        specs = pipeline_specs(self.settings, metrics=False)
        core = [s for s in specs if s.role is not names.Role.WORKER] if self.pipeline else []
        if self.legacy:
            core.append(ChildSpec(LEGACY, names.Role.LEGACY, [LEGACY]))
        self._stack = ExitStack()
        try:
            self._core = self._stack.enter_context(
                running_pipeline(
                    self.settings,
                    log_path=self.log_path,
                    specs=core,
                    start_stack=False,
                    ready_timeout_s=self.ready_timeout_s,
                )
            )
            if self.pipeline:
                self.start_workers(self.settings)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        log.info("services ready (logs: %s)", self.log_path)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._core is not None:
            self._core.stop()  # legacy, ingest, processor: in drain order
        self.stop_workers()  # then the workers, while the shared log is still open
        if self._stack is not None:
            self._stack.close()
            self._stack = None
            self._core = None

    # ------------------------------------------------------------------ workers
    def start_workers(self, settings: HarnessSettings) -> None:
        """(Re)start the persistence workers with ``settings`` (e.g. another batching delay)."""
        self.stop_workers()
        specs = [s for s in pipeline_specs(settings, metrics=False) if s.role is names.Role.WORKER]
        self._workers = Supervisor(settings, specs, out=self._core.out if self._core else None)
        self._workers.start()
        self.worker_settings = settings
        log.info("workers started with worker_max_delay_ms=%d", settings.worker.max_delay_ms)

    def stop_workers(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None

    # ------------------------------------------------------------------ inspection
    def drain(self, timeout: float = 120.0) -> float:
        """Seconds until nothing is in flight between Kafka and the database."""
        if not self.pipeline:
            return 0.0
        seconds, _ = wait_drained(self.settings, timeout=timeout)
        return seconds

    def pids(self) -> dict[str, list[int]]:
        """Root pids per group, for CPU accounting (stack servers included when they are ours)."""
        from barcode_harness.bench.procstats import group_pids

        servers: dict[str, Any] = {}
        try:
            from barcode_harness.stack.managers import manager_for

            servers = dict(manager_for(self.settings).components)
        except Exception as exc:  # someone else's servers: no CPU figures for them
            log.debug("no stack pids: %s", exc)
        return group_pids((self._core, self._workers), servers)


class BacklogSampler:
    """Measures the per-stage backlog every ``interval_s`` on a thread (for charts and growth checks)."""

    def __init__(self, settings: HarnessSettings, interval_s: float = 1.0) -> None:
        self._settings = settings
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog-sampler", daemon=True)
        self.samples: list[tuple[float, Backlog]] = []
        self.on_sample: Callable[[float, Backlog], None] | None = None

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            t = time.time()
            try:
                backlog = measure(self._settings)
                self.samples.append((t, backlog))
            except Exception as exc:
                log.warning("backlog sample failed: %s", exc)
            if self._stop.wait(max(0.0, self._interval - (time.time() - t))):
                return

    def window(self, start: float, end: float) -> list[tuple[float, Backlog]]:
        return [(t, b) for t, b in self.samples if start <= t <= end]

    def series(self, start: float) -> dict[str, list[float]]:
        """Per-stage series with t relative to ``start`` (wall clock)."""
        out: dict[str, list[float]] = {
            "t": [],
            "kafka_lag": [],
            "undelivered": [],
            "pending": [],
            "in_flight": [],
        }
        for t, b in self.samples:
            if t < start - 2.0:
                continue
            out["t"].append(round(t - start, 2))
            out["kafka_lag"].append(b.kafka_lag)
            out["undelivered"].append(sum(b.stream_undelivered.values()))
            out["pending"].append(sum(b.pending_by_consumer.values()))
            out["in_flight"].append(b.in_flight)
        return out


def stage_counts(b: Backlog) -> dict[str, int]:
    return {
        "kafka_lag": b.kafka_lag,
        "undelivered": sum(b.stream_undelivered.values()),
        "pending": sum(b.pending_by_consumer.values()),
    }


@dataclass(frozen=True)
class BenchRun:
    """What every bench run is given: its settings, its result folder, and whose servers it runs on."""

    settings: HarnessSettings
    out: Path
    start_stack: bool = True  # the local stack, unless the servers are someone else's (--no-stack)
    fresh_db: bool = True  # drop and re-create the bench database first (not with --keep-db)
    shared: BenchEnv | None = None  # an environment already running (the smoke tests', table-size's)

    def env(self, *, legacy: bool = True) -> AbstractContextManager[BenchEnv]:
        """The run's environment: ``shared`` as it is (whoever made it stops it), else a new one for
        this run only, with its services' log in ``out``."""
        if self.shared is not None:
            return nullcontext(self.shared)
        return BenchEnv(self.settings, self.out / "services.log", start_stack=self.start_stack,
                        fresh_db=self.fresh_db, legacy=legacy)  # fmt: skip
