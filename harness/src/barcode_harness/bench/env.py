"""The system under test for every ``bench`` command (stack, bench database, pipeline + legacy), and
the set-up, loads, checks and output every run shares.

Two supervisors, so the batching-delay sweep can restart only the workers. Every run starts from an
empty bench database and Redis database ``BENCH_REDIS_DB`` (piled-up duplicate markers made Redis
rewrite its AOF during later runs, each fork pausing it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from barcode_harness.bench import report
from barcode_harness.bench.loadgen import LoadResult, LoadSpec
from barcode_harness.bench.loads import acked_ids, run_load, scan_window, spec_for
from barcode_harness.bench.procstats import group_pids
from barcode_harness.bench.sampler import Sampler
from barcode_harness.bench.specs import Spec
from barcode_harness.keys import with_harness_key
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.managers import manager_for
from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.db.migrate import create_database, database_url, drop_database
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.ops.verify import Verification, verify_scan_ids
from barcode_pipeline.probes.backlog import Backlog, measure
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.supervisor import ChildSpec, Supervisor, pipeline_specs

log = logging.getLogger(__name__)

LEGACY = "legacy"
ASYNC = "async"
PATHS = (LEGACY, ASYNC)
TABLES = {LEGACY: "legacy_barcodes", ASYNC: "barcodes"}
BENCH_REDIS_DB = 1  # the pipeline's own data is in database 0
Markdown = Callable[[dict[str, Any]], str]  # a result as its report
Charts = Callable[[Path, dict[str, Any]], object]  # a result's charts into a folder


def bench_settings(
    settings: HarnessSettings, database: str | None, *, fresh: bool, redis_db: int | None = None
) -> HarnessSettings:
    """The settings pointed at the bench database and Redis database ``redis_db`` (emptied when ``fresh``)."""
    update: dict[str, str] = {}
    if database:
        if database == "barcode" and fresh:
            raise ConfigError("refusing to drop the production database 'barcode'; pick another --database")
        update["db_url"] = database_url(settings.db.url, database)
    if redis_db is not None:
        update["redis_url"] = urlunsplit(urlsplit(settings.redis.url)._replace(path=f"/{redis_db}"))
    return settings.updated(update)


def reset_redis(settings: HarnessSettings) -> None:
    """Empty the bench's Redis database; database 0, the pipeline's own, is never flushed."""
    db = redis_adapter.database_of(settings.redis.url)
    if db == 0:
        return
    with redis_adapter.client(settings) as client:
        try:
            removed = int(client.dbsize())
            client.flushdb()
            log.info("emptied Redis database %d (%d keys)", db, removed)
        except redis.ResponseError as exc:  # e.g. an ACL user without FLUSHDB: the run still goes on
            log.warning("could not empty Redis database %d (%s); earlier runs' keys stay", db, exc)


@dataclass
class BenchEnv:
    """Context manager: everything up (migrated, topics created, services ready), then drained and stopped."""

    settings: HarnessSettings
    log_path: Path
    legacy: bool = True
    start_stack: bool = True
    fresh_db: bool = True
    _core: Supervisor | None = field(default=None, init=False)
    _workers: Supervisor | None = field(default=None, init=False)
    _stack: ExitStack | None = field(default=None, init=False)

    @property
    def api_key(self) -> str:
        """The key the bench's load generators send to ingest (legacy ignores it)."""
        return self.settings.ingest_api_key

    @property
    def ingest_url(self) -> str:
        return self.url(ASYNC)

    def url(self, path: str) -> str:
        server = self.settings.legacy if path == LEGACY else self.settings.ingest
        return f"http://{server.host}:{server.port}"

    def __enter__(self) -> BenchEnv:
        if self.start_stack:
            manager_for(self.settings).up(quiet=True)
        if self.fresh_db:
            drop_database(self.settings.db.url)
            reset_redis(self.settings)
        create_database(self.settings.db.url)
        self.settings = with_harness_key(self.settings, "bench", start_stack=False)
        core = [s for s in pipeline_specs(self.settings, metrics=False) if s.role is not names.Role.WORKER]
        if self.legacy:
            core.append(ChildSpec(LEGACY, names.Role.LEGACY, [LEGACY]))
        self._stack = ExitStack()
        try:
            pipeline = running_pipeline(self.settings, log_path=self.log_path, specs=core, start_stack=False,
                                        ready_timeout_s=90.0)  # fmt: skip
            self._core = self._stack.enter_context(pipeline)
            self.start_workers(self.settings)
        except BaseException:
            self.__exit__()
            raise
        log.info("services ready (logs: %s)", self.log_path)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._core is not None:
            self._core.stop()  # legacy, ingest, processor: in drain order
        self.stop_workers()  # then the workers, while the shared log is still open
        if self._stack is not None:
            self._stack.close()
            self._stack = self._core = None

    def start_workers(self, settings: HarnessSettings) -> None:
        """(Re)start the persistence workers with ``settings`` (e.g. another batching delay)."""
        self.stop_workers()
        specs = [s for s in pipeline_specs(settings, metrics=False) if s.role is names.Role.WORKER]
        self._workers = Supervisor(settings, specs, out=self._core.out if self._core else None)
        self._workers.start()
        log.info("workers started with worker_max_delay_ms=%d", settings.worker.max_delay_ms)

    def stop_workers(self) -> None:
        if self._workers is not None:
            self._workers.stop()
            self._workers = None

    def drain(self, timeout: float = 120.0) -> float:
        """Seconds until nothing is in flight between Kafka and the database."""
        return wait_drained(self.settings, timeout=timeout)[0]

    def pids(self) -> dict[str, list[int]]:
        """Root pids per group, for CPU accounting (stack servers included when they are ours)."""
        servers: dict[str, Any] = {}
        try:
            servers = dict(manager_for(self.settings).components)
        except Exception as exc:  # someone else's servers: no CPU figures for them
            log.debug("no stack pids: %s", exc)
        return group_pids((self._core, self._workers), servers)

    def restarts(self) -> int:
        """Restarts of the supervised processes so far."""
        return sum(c.restarts for sup in (self._core, self._workers) if sup for c in sup.children.values())

    def spec(self, path: str, **spec: Any) -> LoadSpec:
        """An open-loop load (``spec_for``'s keywords) on ``path``'s server, with the bench's key."""
        return spec_for(self.url(path), api_key=self.api_key, **spec)

    def load(self, path: str, **spec: Any) -> LoadResult:
        return run_load(self.spec(path, **spec))

    def warm_up(self, paths: Iterable[str], seconds: float, drain_s: float, **spec: Any) -> None:
        """``seconds`` of unmeasured load (``spec`` as :meth:`load`'s, its duration aside), then a drain:
        first requests pay connection set-up, imports, JIT, caches."""
        if seconds <= 0:
            return
        for path in paths:
            result = self.load(path, **{**spec, "duration_s": seconds})
            log.info("warm-up %s: %d ok, %d errors", path, result.ok, result.errors)
        self.drain(drain_s)

    def verify(self, path: str, load: LoadResult) -> Verification:
        """Acknowledged = stored for ``load``, looked up in ``path``'s table within the load's scan window."""
        window = scan_window(load)
        return verify_scan_ids(self.settings.db.url, acked_ids(load), table=TABLES[path], window=window)


class BacklogSampler(Sampler[tuple[float, Backlog]]):
    """The per-stage backlog every ``interval_s``, with the wall clock it was measured at."""

    def __init__(self, settings: HarnessSettings, interval_s: float = 1.0) -> None:
        super().__init__(lambda: (time.time(), measure(settings)), interval_s)

    def window(self, start: float, end: float) -> list[tuple[float, Backlog]]:
        return [(t, b) for t, b in self.samples if start <= t <= end]

    def series(self, start: float) -> dict[str, list[float]]:
        """Per-stage series with t relative to ``start`` (wall clock)."""
        rows = [
            {"t": round(t - start, 2), **stage_counts(b), "in_flight": b.in_flight}
            for t, b in self.samples
            if t >= start - 2.0
        ]
        return {k: [r[k] for r in rows] for k in ("t", "kafka_lag", "undelivered", "pending", "in_flight")}


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

    def _env(self, legacy: bool) -> AbstractContextManager[BenchEnv]:
        if self.shared is not None:
            return nullcontext(self.shared)
        return BenchEnv(self.settings, self.out / "services.log", legacy=legacy, start_stack=self.start_stack,
                        fresh_db=self.fresh_db)  # fmt: skip

    @contextmanager
    def started(
        self, spec: Spec, *, drain_s: float = 0.0, legacy: bool = True
    ) -> Iterator[tuple[BenchEnv, dict[str, Any]]]:
        """The set-up every run shares: its environment (``shared`` as it is, whoever made it stops it;
        else a new one for this run only, its services' log in ``out``), any earlier backlog drained, and
        the report's environment section, finished once the services are stopped."""
        with self._env(legacy) as env:
            if drain_s:
                env.drain(drain_s)
            info = report.environment(env.settings, {"preset": spec.preset, "spec": spec.to_dict()})
            yield env, info
        report.finish_environment(info)

    def acked(self, name: str) -> Path:
        """Where a load writes the IDs of the scans it had acknowledged."""
        (self.out / "acked").mkdir(parents=True, exist_ok=True)
        return self.out / "acked" / f"{name}.txt"

    def write(
        self, name: str, result: dict[str, Any], markdown: Markdown, charts: Charts | None = None
    ) -> dict[str, Any]:
        """``<name>.json``, the charts and ``<name>.md`` into ``out``; returns ``result``."""
        report.write_json(self.out / f"{name}.json", result)
        if charts is not None:
            charts(self.out, result)
        (self.out / f"{name}.md").write_text(markdown(result))
        return result
