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

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import Receive, Scope

from barcode_pipeline import names
from barcode_pipeline.auth.guard import Authenticator, Principal, openapi_responses
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanRules, parse_scan, parse_scan_batch
from barcode_pipeline.errors import DeliveryError, ValidationFailed
from barcode_pipeline.ingest.metrics import IngestMetrics
from barcode_pipeline.ingest.producer import KafkaBridge, KafkaUnavailable
from barcode_pipeline.web import schemas
from barcode_pipeline.web.app import HotHandler, service_app
from barcode_pipeline.web.body import read_json
from barcode_pipeline.web.contract import (
    RETRY_AFTER_DOC,
    accepted,
    batch_result,
    batch_too_large,
    batch_unavailable,
    client_errors,
    json_response,
    too_large_doc,
    unavailable,
    validation_failed,
)

log = logging.getLogger(__name__)

KAFKA_DOWN = "Kafka is unreachable or the topic is not writable (the ingest log says why)"


def not_confirmed(exc: DeliveryError) -> str:
    """What a client is told when Kafka did not confirm: whether to wait, not the broker's details
    (its address, TLS or SASL errors), which go to the log."""
    log.debug("not confirmed: %s", exc)
    return (
        f"{KAFKA_DOWN}; resend after Retry-After"
        if isinstance(exc, KafkaUnavailable)
        else ("Kafka did not confirm the write; resend after Retry-After")
    )


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
    rules = ScanRules.from_days(settings.scan_max_age_days, settings.scan_max_future_ms)
    body_limit = settings.max_body_bytes
    max_items = settings.max_batch_items
    guard = Authenticator(settings, metrics)
    auth_errors = openapi_responses(settings.ingest_key_rate > 0) if guard.required else {}
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

    handlers: dict[str, HotHandler] = {}
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
        metrics_from=settings.metrics_from,
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
        return await scan_one(request.scope, request.receive)

    async def scan_one(scope: Scope, receive: Receive) -> Response:
        principal = guard.identify(scope)
        if isinstance(principal, Response):
            return principal  # refused before the body is read
        obj = await read_json(scope, receive, body_limit)
        return obj if isinstance(obj, Response) else await handle_one(obj, principal)

    async def handle_one(obj: object, principal: Principal) -> Response:
        try:
            event = parse_scan(obj, rules)
        except ValidationFailed as exc:
            return validation_failed(exc)
        if (refused := guard.forbidden(principal, (event.device_id,), batch=False)) is not None:
            return refused
        try:
            await kafka.send(event)
        except DeliveryError as exc:
            return unavailable(not_confirmed(exc))
        metrics.accepted.inc()
        guard.accepted(principal, 1)
        return accepted(event.scan_id)

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
        return await scan_batch(request.scope, request.receive)

    async def scan_batch(scope: Scope, receive: Receive) -> Response:
        principal = guard.identify(scope)
        if isinstance(principal, Response):
            return principal
        obj = await read_json(scope, receive, body_limit)
        return obj if isinstance(obj, Response) else await handle_batch(obj, principal)

    async def handle_batch(obj: object, principal: Principal) -> Response:
        if isinstance(obj, list) and len(obj) > max_items:
            return batch_too_large(max_items, len(obj))
        try:
            events = parse_scan_batch(obj, rules, max_items=max_items)
        except ValidationFailed as exc:
            return validation_failed(exc)
        devices = (event.device_id for event in events)
        if (refused := guard.forbidden(principal, devices, batch=True)) is not None:
            return refused  # like a validation error: the whole batch is refused, nothing is sent
        total = len(events)
        try:
            failed = await kafka.send_many(events)
        except DeliveryError as exc:
            return batch_unavailable(not_confirmed(exc), total)
        if total > len(failed):
            metrics.accepted.inc(total - len(failed))
            guard.accepted(principal, total - len(failed))
        return batch_result(total, failed, none_confirmed="Kafka confirmed none of the scans")

    handlers.update({names.ROUTE_SCAN: scan_one, names.ROUTE_BATCH: scan_batch})

    @app.get(
        names.ROUTE_READY,
        response_model=schemas.Ready,
        summary="Kafka is reachable and the topic is writable",
        responses={503: {"model": schemas.Ready, "description": "Kafka unreachable or topic not usable."}},
    )
    async def ready() -> Response:
        if kafka.available:
            return json_response(200, {"status": "ready", "kafka": "up"})
        # the cause (broker address, TLS or SASL details) is in the log, not for whoever asks
        return json_response(503, {"status": "not_ready", "kafka": "down", "reason": KAFKA_DOWN})

    return app
