"""Request-body reading and JSON error responses, kept apart from routing so they stay testable.

Every error the service answers is a small JSON object ``{"error": <code>, "message": ..., ...}``,
never a stack trace, so scanners and load generators can branch on ``error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from barcode_pipeline.errors import ValidationFailed
from barcode_pipeline.ingest import schemas

JSON = "application/json"
RETRY_AFTER_S = 1  # how long a client should wait after a 503 before resending (the breaker re-probes faster)

# The wire API, shared by the async ingest service and the legacy baseline (same scanners).
ROUTE_ONE = "/ingest/barcode"
ROUTE_BATCH = "/ingest/barcodes"
# Paths get their own metrics label; anything else (docs, 404s) is "other", so labels stay bounded.
LABELLED_ROUTES = frozenset({ROUTE_ONE, ROUTE_BATCH, "/health", "/ready", "/metrics"})


def client_errors(invalid: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the 4xx answers both services give; ``invalid`` describes their 422."""
    return {
        400: {"model": schemas.ErrorBody, "description": "Malformed JSON."},
        413: {
            "model": schemas.ErrorBody,
            "description": "Body over `max_body_bytes`, or batch over `max_batch_items`.",
        },
        422: {"model": schemas.ErrorBody, "description": invalid},
    }


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit (maps to 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class BadBody(Exception):
    """The body could not be read (client went away mid-body)."""


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing anything over ``limit`` bytes without buffering it.

    ``Content-Length`` is checked first (no read at all for an honest oversize request); the actual
    read is capped as well, because a chunked request has no length up front.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    return await read_capped(request.receive, limit)


async def read_capped(receive: Receive, limit: int) -> bytes:
    """Collect ASGI ``http.request`` messages up to ``limit`` bytes (usually one message, no copy)."""
    first = b""
    chunks: list[bytes] | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadBody("client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            if not first:
                first = chunk
            else:
                if chunks is None:
                    chunks = [first]
                chunks.append(chunk)
        if not message.get("more_body", False):
            return first if chunks is None else b"".join(chunks)


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(
    status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return json_response(status, {"error": error, "message": message, **extra}, headers)


def malformed_json(exc: Exception) -> Response:
    return error_response(400, "malformed_json", f"request body is not valid JSON: {exc}")


def too_large(message: str) -> Response:
    """413, closing the connection: otherwise the server would keep reading and discarding the rest."""
    return error_response(413, "too_large", message, headers={"Connection": "close"})


def validation_failed(exc: ValidationFailed) -> Response:
    """422 naming the broken field, and its position when it came from a batch."""
    body: dict[str, Any] = {"error": "validation", "field": exc.field}
    if exc.index is not None:
        body["index"] = exc.index
    body["message"] = str(exc)
    return json_response(422, body)


def unavailable(message: str, **extra: Any) -> Response:
    """503 + Retry-After: the scan was not confirmed and the client should resend it (idempotently)."""
    return error_response(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_S)}, **extra)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no per-request Request object) timing every request by route and status.

    Shared by the ingest service and the legacy baseline, so both are measured the same way; paths
    outside ``routes`` are labelled "other" to keep the label set bounded.
    """

    def __init__(
        self, app: ASGIApp, observe: Callable[[str, int, float], None], routes: frozenset[str]
    ) -> None:
        self.app = app
        self.observe = observe
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.observe(route, status, time.perf_counter() - started)


def install_health_and_metrics(app: FastAPI, render: Callable[[], bytes], content_type: str) -> None:
    """``GET /health`` (the process is alive) and ``GET /metrics`` (Prometheus text), the same in both."""

    @app.get("/health", response_model=schemas.Health, summary="The process is alive")
    async def health() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {content_type: {}}, "description": "Prometheus text format."}},
    )
    async def prometheus() -> Response:
        return Response(render(), media_type=content_type)


def install_json_error_handlers(app: FastAPI) -> None:
    """404/405/... and unexpected errors answer as small JSON objects, never as a stack trace."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = "not_found" if exc.status_code == 404 else "http"
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, _exc: Exception) -> Response:
        # Starlette re-raises after this response, so the server logs the traceback once.
        return error_response(500, "internal", "internal server error")
