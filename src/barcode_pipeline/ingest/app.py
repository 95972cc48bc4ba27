"""The ingest HTTP API: validate a scan, write it to Kafka, answer only once Kafka confirmed it.

FastAPI provides routing and the OpenAPI docs; the hot path deliberately skips its body
validation: it reads the raw body, parses it with orjson and validates with the shared domain
rules, then answers with pre-encoded bytes. That keeps the service's own overhead far below the
Kafka round trip it has to wait for anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPBearer

from barcode_pipeline import names
from barcode_pipeline.auth.guard import Authenticator, openapi_responses
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.handlers import IngestState, readiness, scan_batch, scan_one
from barcode_pipeline.ingest.metrics import IngestMetrics
from barcode_pipeline.ingest.producer import KafkaBridge
from barcode_pipeline.web import schemas
from barcode_pipeline.web.app import HotHandler, service_app
from barcode_pipeline.web.contract import (
    RETRY_AFTER_DOC,
    client_errors,
    too_large_doc,
)

log = logging.getLogger(__name__)

_ERRORS = client_errors("A rule is broken; `field` (and `index`, in a batch) name it.")


def create_app(
    settings: Settings, *, bridge: KafkaBridge | None = None, metrics: IngestMetrics | None = None
) -> FastAPI:
    """Build the app. The Kafka bridge starts in the lifespan, so importing or building costs no I/O.

    ``bridge``/``metrics`` may be injected (tests tune the producer that way); by default each app
    owns one producer for its process.
    """
    metrics = metrics if metrics is not None else IngestMetrics()
    kafka = bridge if bridge is not None else KafkaBridge(settings, metrics=metrics)
    guard = Authenticator(settings, metrics)
    state = IngestState.of(settings, kafka, guard, metrics)
    body_limit, max_items = state.body_limit, state.max_items
    auth_errors = openapi_responses() if guard.required else {}
    # Declared for the OpenAPI docs only (security schemes, the "Authorize" button): the fast path
    # answers these routes before FastAPI's dependencies would run.
    auth_docs = (
        [Depends(HTTPBearer(auto_error=False)), Depends(APIKeyHeader(name="X-API-Key", auto_error=False))]
        if guard.required
        else []
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(kafka.start, asyncio.get_running_loop())
        await guard.start()
        try:
            yield
        finally:
            await guard.stop()
            # uvicorn has already stopped accepting and finished in-flight requests at this point.
            await asyncio.to_thread(kafka.close)
            log.info("ingest stopped; producer flushed")

    handlers: dict[str, HotHandler] = {
        names.ROUTE_SCAN: partial(scan_one, state),
        names.ROUTE_BATCH: partial(scan_batch, state),
    }
    app = service_app(
        title="barcode-pipeline ingest",
        description=(
            "Accepts barcode scans and answers only after Kafka confirmed the write (acks=all). "
            "A 503 (with Retry-After) means *not confirmed*: resend; resending is idempotent because "
            "the scanId is kept (or derived deterministically)."
        ),
        lifespan=lifespan,
        metrics=metrics,
        hot_paths=handlers,
        metrics_from=settings.ingest.metrics_from,
    )
    app.state.kafka = kafka
    app.state.auth = guard

    @app.post(
        names.ROUTE_SCAN,
        status_code=202,
        response_model=None,
        dependencies=auth_docs,
        summary="Ingest one scan",
        responses={
            202: {"model": schemas.Accepted, "description": "Kafka confirmed the write."},
            **_ERRORS,
            413: too_large_doc(body_limit),
            **auth_errors,
            503: {
                "model": schemas.ErrorBody,
                "description": "Not confirmed in time or Kafka unreachable; resend after `Retry-After`.",
                "headers": RETRY_AFTER_DOC,
            },
        },
        openapi_extra=schemas.json_body(schemas.scan_schema()),
    )
    async def ingest_barcode(request: Request) -> Response:
        return await scan_one(state, request.scope, request.receive)

    @app.post(
        names.ROUTE_BATCH,
        status_code=200,
        response_model=None,
        dependencies=auth_docs,
        summary="Ingest a batch of scans (all valid, or none is sent)",
        responses={
            200: {"model": schemas.BatchResult, "description": "Kafka confirmed every scan."},
            207: {"model": schemas.BatchResult, "description": "Some scans were not confirmed; resend them."},
            **_ERRORS,
            413: too_large_doc(body_limit, max_items),
            **auth_errors,
            503: {
                "model": schemas.BatchUnavailable,
                "description": "No scan was confirmed; resend after `Retry-After`.",
                "headers": RETRY_AFTER_DOC,
            },
        },
        openapi_extra=schemas.json_body(schemas.batch_schema(max_items)),
    )
    async def ingest_barcodes(request: Request) -> Response:
        return await scan_batch(state, request.scope, request.receive)

    @app.get(
        names.ROUTE_READY,
        response_model=schemas.Ready,
        summary="Kafka is reachable and the topic is writable",
        responses={503: {"model": schemas.Ready, "description": "Kafka unreachable or topic not usable."}},
    )
    async def ready() -> Response:
        return readiness(state)

    return app
