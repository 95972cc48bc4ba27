"""Serve the legacy app (see :mod:`barcode_pipeline.web.server`) in as many processes as ingest.

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
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI

from barcode_pipeline.config import Settings
from barcode_pipeline.legacy.pool import DEFAULT_TIMEOUT_S
from barcode_pipeline.web.server import ServerSpec
from barcode_pipeline.web.server import serve as serve_http

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessBudget:
    """What each server process gets."""

    processes: int
    pool_size: int
    threads: int


def budget(settings: Settings) -> ProcessBudget:
    """Split the container-wide pool and thread budget over ``ingest_processes`` processes (ceil)."""
    processes = settings.ingest.processes
    return ProcessBudget(
        processes=processes,
        pool_size=math.ceil(settings.legacy.pool_size / processes),
        threads=math.ceil(settings.legacy.threads / processes),
    )


def build_app(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> FastAPI:
    """One process's app, with its share of the pool and thread budget."""
    from barcode_pipeline.legacy.app import create_app

    share = budget(settings)
    return create_app(
        settings, pool_size=share.pool_size, threads=share.threads, pool_timeout_s=pool_timeout_s
    )


def server_spec(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> ServerSpec:
    return ServerSpec(
        name="legacy",
        host=settings.legacy.host,
        port=settings.legacy.port,
        processes=settings.ingest.processes,
        app_factory=partial(build_app, settings, pool_timeout_s),
        # An in-flight request may wait the pool timeout and then for its statements; allow that.
        graceful_shutdown_s=math.ceil(pool_timeout_s) + 10,
        log_level=settings.log_level,
        log_format=settings.log_format,
    )


def serve(settings: Settings, pool_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish (and commit) before a process exits."""
    share = budget(settings)
    log.info(
        "legacy listening on http://%s:%d with %d process(es) x %d DB connection(s) x %d thread(s), DB %s",
        settings.legacy.host,
        settings.legacy.port,
        share.processes,
        share.pool_size,
        share.threads,
        _redacted(settings.db.url),
    )
    serve_http(server_spec(settings, pool_timeout_s))


def _redacted(url: str) -> str:
    """The DB URL without its password, for the start-up log line."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
