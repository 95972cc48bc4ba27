"""The ingest's handlers: plain functions over an explicit :class:`IngestState`.

The two scan routes are answered on the hot path (web/app.py's ``ServiceApp`` calls them ahead of
FastAPI's middleware and dependencies), so they take the raw ASGI ``scope`` and ``receive``: they read
the body themselves, parse it with orjson, validate it with the domain rules and answer with
pre-encoded bytes. Nothing here is a closure: ``create_app`` builds the state once per process and
binds it with ``functools.partial``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi.responses import Response
from starlette.types import Receive, Scope

from barcode_pipeline.auth.guard import Authenticator, Principal
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanRules, parse_scan, parse_scan_batch
from barcode_pipeline.errors import DeliveryError, ValidationFailed
from barcode_pipeline.ingest.metrics import IngestMetrics
from barcode_pipeline.ingest.producer import KafkaBridge, KafkaUnavailable
from barcode_pipeline.web.body import read_json
from barcode_pipeline.web.contract import (
    accepted,
    batch_result,
    batch_too_large,
    batch_unavailable,
    json_response,
    unavailable,
    validation_failed,
)

log = logging.getLogger(__name__)

KAFKA_DOWN = "Kafka is unreachable or the topic is not writable (the ingest log says why)"


@dataclass(frozen=True, slots=True)
class IngestState:
    """What every handler of one ingest process works with."""

    kafka: KafkaBridge
    guard: Authenticator
    metrics: IngestMetrics
    rules: ScanRules
    body_limit: int
    max_items: int

    @classmethod
    def of(
        cls, settings: Settings, kafka: KafkaBridge, guard: Authenticator, metrics: IngestMetrics
    ) -> IngestState:
        rules = ScanRules.from_days(settings.ingest.scan_max_age_days, settings.ingest.scan_max_future_ms)
        return cls(
            kafka, guard, metrics, rules, settings.ingest.max_body_bytes, settings.ingest.max_batch_items
        )


def not_confirmed(exc: DeliveryError) -> str:
    """What a client is told when Kafka did not confirm: whether to wait, not the broker's details
    (its address, TLS or SASL errors), which go to the log."""
    log.debug("not confirmed: %s", exc)
    if isinstance(exc, KafkaUnavailable):
        return f"{KAFKA_DOWN}; resend after Retry-After"
    return "Kafka did not confirm the write; resend after Retry-After"


async def scan_one(state: IngestState, scope: Scope, receive: Receive) -> Response:
    """``POST /ingest/barcode``: 202 once Kafka confirmed the scan."""
    principal = state.guard.identify(scope)
    if isinstance(principal, Response):
        return principal  # refused before the body is read
    obj = await read_json(scope, receive, state.body_limit)
    return obj if isinstance(obj, Response) else await handle_one(state, obj, principal)


async def handle_one(state: IngestState, obj: object, principal: Principal) -> Response:
    try:
        event = parse_scan(obj, state.rules)
    except ValidationFailed as exc:
        return validation_failed(exc)
    if (refused := state.guard.forbidden(principal, (event.device_id,), batch=False)) is not None:
        return refused
    if (limited := state.guard.limit(principal, 1)) is not None:
        return limited
    try:
        await state.kafka.send(event)
    except DeliveryError as exc:
        state.guard.refund(principal, 1)
        return unavailable(not_confirmed(exc))
    state.metrics.accepted.inc()
    state.guard.accepted(principal, 1)
    return accepted(event.scan_id)


async def scan_batch(state: IngestState, scope: Scope, receive: Receive) -> Response:
    """``POST /ingest/barcodes``: all valid or none sent; 200, 207 naming what to resend, or 503."""
    principal = state.guard.identify(scope)
    if isinstance(principal, Response):
        return principal
    obj = await read_json(scope, receive, state.body_limit)
    return obj if isinstance(obj, Response) else await handle_batch(state, obj, principal)


async def handle_batch(state: IngestState, obj: object, principal: Principal) -> Response:
    if isinstance(obj, list) and len(obj) > state.max_items:
        return batch_too_large(state.max_items, len(obj))
    try:
        events = parse_scan_batch(obj, state.rules, max_items=state.max_items)
    except ValidationFailed as exc:
        return validation_failed(exc)
    devices = (event.device_id for event in events)
    if (refused := state.guard.forbidden(principal, devices, batch=True)) is not None:
        return refused  # like a validation error: the whole batch is refused, nothing is sent
    total = len(events)
    if (limited := state.guard.limit(principal, total)) is not None:
        return limited  # every scan counts: a batch of 1,000 costs 1,000
    try:
        failed = await state.kafka.send_many(events)
    except DeliveryError as exc:
        state.guard.refund(principal, total)
        return batch_unavailable(not_confirmed(exc), total)
    state.guard.refund(principal, len(failed))
    if total > len(failed):
        state.metrics.accepted.inc(total - len(failed))
        state.guard.accepted(principal, total - len(failed))
    return batch_result(total, failed, none_confirmed="Kafka confirmed none of the scans")


def readiness(state: IngestState) -> Response:
    """``GET /ready``: Kafka reachable and the topic writable; the cause of a 503 is in the log only."""
    if state.kafka.available:
        return json_response(200, {"status": "ready", "kafka": "up"})
    return json_response(503, {"status": "not_ready", "kafka": "down", "reason": KAFKA_DOWN})
