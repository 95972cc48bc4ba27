"""Run the legacy app under uvicorn, in as many processes as the ingest service, on one port.

Like-for-like resources: the benchmark compares the two paths on the same cores, so the baseline
gets the same number of server processes as ingest (``ingest_processes``), which also keeps one
GIL from capping it. The old monolith was *one* servlet container, though, with one JDBC pool of
``legacy_pool_size`` connections and ``legacy_threads`` worker threads; to keep the load the
baseline puts on MariaDB identical to that, both budgets are split across the processes (ceiling
division, so with the defaults 2 processes x 5 connections = 10 and 2 x 20 threads = 40). The
total only exceeds the setting when it does not divide evenly, by less than one per process.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import partial

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.metrics import multiprocess_metrics_dir
from barcode_pipeline.legacy.pool import DEFAULT_TIMEOUT_S
from barcode_pipeline.logs import setup_logging

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessBudget:
    """What each server process gets."""

    processes: int
    pool_size: int
    threads: int


def budget(settings: Settings) -> ProcessBudget:
    """Split the container-wide pool and thread budget over ``ingest_processes`` processes (ceil)."""
    processes = settings.ingest_processes
    return ProcessBudget(
        processes=processes,
        pool_size=math.ceil(settings.legacy_pool_size / processes),
        threads=math.ceil(settings.legacy_threads / processes),
    )


def build_worker_app(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> FastAPI:
    """App factory run inside each server process (picklable via ``functools.partial``)."""
    from barcode_pipeline.legacy.app import create_app

    setup_logging(settings.log_level, f"legacy[{os.getpid()}]", settings.log_format)
    share = budget(settings)
    return create_app(
        settings, pool_size=share.pool_size, threads=share.threads, pool_timeout_s=pool_timeout_s
    )


def uvicorn_config(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> uvicorn.Config:
    return uvicorn.Config(
        partial(build_worker_app, settings, pool_timeout_s),
        factory=True,
        host=settings.legacy_host,
        port=settings.legacy_port,
        workers=settings.ingest_processes,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        backlog=4096,
        timeout_keep_alive=30,
        # An in-flight request may wait the pool timeout and then for its statements; allow that.
        timeout_graceful_shutdown=math.ceil(pool_timeout_s) + 10,
    )


def serve(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish (and commit) before a process exits."""
    share = budget(settings)
    log.info(
        "legacy listening on http://%s:%d with %d process(es) x %d DB connection(s) x %d thread(s), DB %s",
        settings.legacy_host,
        settings.legacy_port,
        share.processes,
        share.pool_size,
        share.threads,
        _redacted(settings.db_url),
    )
    if share.processes == 1:
        uvicorn.Server(uvicorn_config(settings, pool_timeout_s)).run()
        return
    with multiprocess_metrics_dir("bp-legacy-metrics-"):
        config = uvicorn_config(settings, pool_timeout_s)
        sock = config.bind_socket()
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()


def _redacted(url: str) -> str:
    """The DB URL without its password, for the start-up log line."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
