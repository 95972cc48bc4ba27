"""The legacy synchronous baseline: the same API and validation as the ingest service, the old write path.

Each request is handled like a servlet on a classic thread-per-request container: the event loop
only moves bytes (reading the capped body, writing the response); everything else, JSON parsing,
validation, the center lookup, the row-by-row INSERTs and the COMMIT, runs on one worker thread of
a bounded pool (anyio's default thread limiter, sized to the container's ``maxThreads``), and the
answer is sent only after the COMMIT. DB connections come from a bounded pool that makes a request
wait up to a timeout (HikariCP's 30 s by default) and then answer 503, as the old service did.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import anyio.to_thread
import pymysql
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanRules, parse_scan, parse_scan_batch
from barcode_pipeline.errors import DeliveryError, ValidationFailed
from barcode_pipeline.legacy.metrics import LegacyMetrics
from barcode_pipeline.legacy.pool import DEFAULT_TIMEOUT_S, ConnectionPool, PoolTimeout
from barcode_pipeline.legacy.store import LegacyStore, connection_factory
from barcode_pipeline.web import schemas
from barcode_pipeline.web.app import service_app
from barcode_pipeline.web.body import decode_json, read_body
from barcode_pipeline.web.contract import (
    accepted,
    batch_result,
    batch_too_large,
    batch_unavailable,
    client_errors,
    error_response,
    json_response,
    too_large_doc,
    unavailable,
    validation_failed,
)

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0  # /ready waits at most this long for a pooled connection

_ERRORS = client_errors(
    "A rule is broken or the device has no center; `field` (and `index`, in a batch) name it."
)


class LegacyReady(BaseModel):
    status: Literal["ready", "not_ready"]
    db: Literal["up", "down"]
    reason: str | None = None


class LegacyHandlers:
    """The blocking request bodies; each method runs on a worker thread and returns the response."""

    def __init__(self, settings: Settings, store: LegacyStore, metrics: LegacyMetrics) -> None:
        self._rules = ScanRules.from_days(
            settings.ingest.scan_max_age_days, settings.ingest.scan_max_future_ms
        )
        self._max_items = settings.ingest.max_batch_items
        self._store = store
        self._metrics = metrics

    def one(self, body: bytes) -> Response:
        obj = decode_json(body)
        if isinstance(obj, Response):
            return obj
        try:
            event = parse_scan(obj, self._rules)
            self._store.save([event], batch=False)
        except ValidationFailed as exc:
            return validation_failed(exc)
        except DeliveryError as exc:
            return self._unavailable(exc)
        except pymysql.MySQLError as exc:
            return self._failed(exc)
        return accepted(event.scan_id)

    def many(self, body: bytes) -> Response:
        obj = decode_json(body)
        if isinstance(obj, Response):
            return obj
        if isinstance(obj, list) and len(obj) > self._max_items:
            return batch_too_large(self._max_items, len(obj))
        try:
            events = parse_scan_batch(obj, self._rules, max_items=self._max_items)
            self._store.save(events, batch=True)
        except ValidationFailed as exc:
            return validation_failed(exc)
        except DeliveryError as exc:
            return self._unavailable(exc, batch_total=len(obj) if isinstance(obj, list) else 0)
        except pymysql.MySQLError as exc:
            return self._failed(exc)
        return batch_result(len(events), [], none_confirmed="nothing was stored")  # one transaction: all

    def ready(self) -> Response:
        try:
            self._store.ping(READY_TIMEOUT_S)
        except DeliveryError as exc:
            return json_response(503, {"status": "not_ready", "db": "down", "reason": str(exc)})
        return json_response(200, {"status": "ready", "db": "up"})

    def _unavailable(self, exc: DeliveryError, *, batch_total: int | None = None) -> Response:
        if isinstance(exc, PoolTimeout):
            self._metrics.pool_timeouts.inc()
        else:
            self._metrics.db_error("unavailable")
            log.warning("request failed on the database: %s", exc)
        return unavailable(str(exc)) if batch_total is None else batch_unavailable(str(exc), batch_total)

    def _failed(self, exc: pymysql.MySQLError) -> Response:
        """A DB error that a resend will not fix (e.g. data too long): 500, logged with its traceback."""
        log.error("request failed on the database", exc_info=exc)
        self._metrics.db_error("other")
        return error_response(500, "internal", "database error")


def create_app(
    settings: Settings,
    *,
    pool_size: int | None = None,
    threads: int | None = None,
    pool_timeout_s: float = DEFAULT_TIMEOUT_S,
    metrics: LegacyMetrics | None = None,
) -> FastAPI:
    """Build one process's app: ``pool_size`` connections and ``threads`` workers (settings by default).

    The pool is opened and pre-filled in the lifespan, so building the app costs no I/O.
    """
    metrics = metrics if metrics is not None else LegacyMetrics()
    size = pool_size if pool_size is not None else settings.legacy.pool_size
    max_threads = threads if threads is not None else settings.legacy.threads
    pool = ConnectionPool(connection_factory(settings.db.url), size, pool_timeout_s)
    store = LegacyStore(pool, settings.time_zone, metrics)
    handlers = LegacyHandlers(settings, store, metrics)
    body_limit = settings.ingest.max_body_bytes

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The servlet container's maxThreads: every blocking request body below shares this limiter.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max_threads
        idle = await anyio.to_thread.run_sync(pool.fill)
        log.info(
            "legacy ready: %d/%d DB connection(s) open, %d worker thread(s), pool timeout %gs",
            idle,
            size,
            max_threads,
            pool_timeout_s,
        )
        try:
            yield
        finally:
            pool.close()
            log.info("legacy stopped; connections closed")

    app = service_app(
        title="barcode-pipeline legacy baseline",
        description=(
            "The old synchronous path, kept as a benchmark baseline: each request looks up the device's "
            "center, INSERTs its rows one by one into `legacy_barcodes` and COMMITs before answering."
        ),
        lifespan=lifespan,
        metrics=metrics,
        metrics_from=settings.ingest.metrics_from,
    )
    app.state.pool = pool

    async def read(request: Request) -> bytes | Response:
        return await read_body(request.scope, request.receive, body_limit)

    @app.post(
        names.ROUTE_SCAN,
        status_code=202,
        response_model=None,
        summary="Store one scan (answers after COMMIT)",
        responses={
            202: {"model": schemas.Accepted, "description": "The row is committed."},
            **_ERRORS,
            413: too_large_doc(settings.ingest.max_body_bytes),
            503: {"model": schemas.ErrorBody, "description": "No DB connection in time, or the DB failed."},
        },
        openapi_extra=schemas.json_body(schemas.scan_schema()),
    )
    async def ingest_barcode(request: Request) -> Response:
        body = await read(request)
        if isinstance(body, Response):
            return body
        return await anyio.to_thread.run_sync(handlers.one, body)

    @app.post(
        names.ROUTE_BATCH,
        status_code=200,
        response_model=None,
        summary="Store a batch of scans in one transaction (all or none)",
        responses={
            200: {"model": schemas.BatchResult, "description": "Every row is committed."},
            **_ERRORS,
            413: too_large_doc(settings.ingest.max_body_bytes, settings.ingest.max_batch_items),
            503: {"model": schemas.BatchUnavailable, "description": "Nothing was stored; resend later."},
        },
        openapi_extra=schemas.json_body(schemas.batch_schema(settings.ingest.max_batch_items)),
    )
    async def ingest_barcodes(request: Request) -> Response:
        body = await read(request)
        if isinstance(body, Response):
            return body
        return await anyio.to_thread.run_sync(handlers.many, body)

    @app.get(
        names.ROUTE_READY,
        response_model=LegacyReady,
        summary="A pooled DB connection answers",
        responses={503: {"model": LegacyReady, "description": "DB unreachable or the pool is exhausted."}},
    )
    async def ready() -> Response:
        return await anyio.to_thread.run_sync(handlers.ready)

    return app
