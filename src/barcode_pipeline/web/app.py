"""What every service app has, installed once: request timing, JSON errors, /health and /metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from barcode_pipeline import __version__, names
from barcode_pipeline.domain.networks import NetworkTable
from barcode_pipeline.web import schemas
from barcode_pipeline.web.contract import error_response, json_response
from barcode_pipeline.web.docs_policy import DocsPolicyMiddleware
from barcode_pipeline.web.metrics import METRICS_CONTENT_TYPE, RequestMetricsMiddleware, ServiceMetrics

log = logging.getLogger(__name__)

# A hot-path handler answers a request from its ASGI scope and receive channel alone.
HotHandler = Callable[[Scope, Receive], Awaitable[Response]]

# Paths get their own metrics label; anything else (docs, 404s) is "other", so labels stay bounded.
LABELLED_ROUTES = frozenset(
    {names.ROUTE_SCAN, names.ROUTE_BATCH, names.ROUTE_HEALTH, names.ROUTE_READY, names.ROUTE_METRICS}
)


class ServiceApp(FastAPI):
    """FastAPI, plus hot paths answered before its middleware stack.

    A profile of ingest at 2,000 req/s spent a quarter of each request in the middleware layers
    around the routes (error handling, body limits, telemetry checks, timing), none of which the
    scan endpoints need: they read their own bounded body and answer with pre-built JSON. A
    ``POST`` to a hot path is timed and answered here; everything else (docs, /health, /metrics,
    other methods, the lifespan) goes through FastAPI unchanged. The FastAPI routes of the same
    paths stay declared for the OpenAPI docs and call the same handlers.
    """

    hot_paths: Mapping[str, HotHandler]
    observe: Callable[[str, int, float], None]  # route, status, seconds: the request-timing metric

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        """Refuse a middleware that does not know the hot paths skip it.

        An auth, address or rate check added as middleware would guard /docs and /health and
        silently not the scan endpoints. Such a check belongs in the hot handlers
        (ingest/handlers.py); a middleware meant for the other paths only says so with a class
        attribute ``skips_hot_paths = True``."""
        if not getattr(middleware_class, "skips_hot_paths", False):
            name = getattr(middleware_class, "__name__", repr(middleware_class))
            raise TypeError(
                f"{name} would not see POST {', '.join(sorted(self.hot_paths))}: they are answered before "
                "the middleware stack; check requests in their handlers, or set skips_hot_paths = True"
            )
        super().add_middleware(middleware_class, *args, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.hot_paths.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None or scope["method"] != "POST":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            response = await handler(scope, receive)
        except Exception:  # answer as the error handlers would; never a trace to the client
            log.exception("unhandled error on %s", scope["path"])
            response = error_response(500, "internal", "internal server error")
        try:
            await response(scope, receive, send)
        finally:
            self.observe(scope["path"], response.status_code, time.perf_counter() - started)


def service_app(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    metrics: ServiceMetrics,
    hot_paths: Mapping[str, HotHandler] | None = None,
    metrics_from: str = "",
) -> FastAPI:
    """A FastAPI app with the parts both services share. ``hot_paths`` (path -> handler, for POST)
    are served ahead of the middleware stack (see :class:`ServiceApp`); they are timed all the same."""
    # FastAPIOffline serves Swagger UI's and ReDoc's files from its own package: /docs works in an
    # air-gapped network and runs no script from a public CDN.
    app = FastAPIOffline(
        title=title,
        version=__version__,
        description=description,
        lifespan=lifespan,
        docs_url=names.ROUTE_DOCS,
        redoc_url=names.ROUTE_REDOC,
        static_url=names.ROUTE_DOCS_ASSETS,
    )
    app.add_middleware(DocsPolicyMiddleware, paths=frozenset({names.ROUTE_DOCS, names.ROUTE_REDOC}))
    app.state.metrics = metrics
    # fastapi-offline builds the FastAPI instance itself; ServiceApp adds only a __call__ and two
    # attributes, so the instance takes that class instead of being rebuilt.
    app.__class__ = ServiceApp
    assert isinstance(app, ServiceApp)
    app.hot_paths = hot_paths if hot_paths is not None else {}
    app.observe = metrics.observe_request
    app.add_middleware(RequestMetricsMiddleware, observe=metrics.observe_request, routes=LABELLED_ROUTES)
    install_json_error_handlers(app)
    install_health_and_metrics(app, metrics.render, NetworkTable.of(metrics_from))
    return app


def install_health_and_metrics(app: FastAPI, render: Callable[[], bytes], scrapers: NetworkTable) -> None:
    """``GET /health`` (the process is alive) and ``GET /metrics`` (Prometheus text), the same in both.

    ``/metrics`` names the scanner keys, their volumes and the trusted networks: on a public port it
    answers only the ``scrapers`` (BP_METRICS_FROM), 403 to everyone else."""

    @app.get(names.ROUTE_HEALTH, response_model=schemas.Health, summary="The process is alive")
    async def health() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get(
        names.ROUTE_METRICS,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
    )
    async def prometheus(request: Request) -> Response:
        client = request.client.host if request.client else ""
        if scrapers.lookup(client) is None:
            return error_response(403, "forbidden", "metrics are served to BP_METRICS_FROM only")
        return Response(render(), media_type=METRICS_CONTENT_TYPE)


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
