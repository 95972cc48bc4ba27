"""What every service app has, installed once: request timing, JSON errors, /health and /metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from barcode_pipeline import __version__, names
from barcode_pipeline.web import schemas
from barcode_pipeline.web.contract import error_response, json_response
from barcode_pipeline.web.docs_policy import DocsPolicyMiddleware
from barcode_pipeline.web.metrics import METRICS_CONTENT_TYPE, RequestMetricsMiddleware, ServiceMetrics

# Paths get their own metrics label; anything else (docs, 404s) is "other", so labels stay bounded.
LABELLED_ROUTES = frozenset(
    {names.ROUTE_SCAN, names.ROUTE_BATCH, names.ROUTE_HEALTH, names.ROUTE_READY, names.ROUTE_METRICS}
)


def service_app(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    metrics: ServiceMetrics,
    inner_middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """A FastAPI app with the parts both services share. ``inner_middleware`` runs inside the timing,
    so requests it answers itself (ingest's fast path) are still measured."""
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
    for middleware in inner_middleware:
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(RequestMetricsMiddleware, observe=metrics.observe_request, routes=LABELLED_ROUTES)
    install_json_error_handlers(app)
    install_health_and_metrics(app, metrics.render)
    return app


def install_health_and_metrics(app: FastAPI, render: Callable[[], bytes]) -> None:
    """``GET /health`` (the process is alive) and ``GET /metrics`` (Prometheus text), the same in both."""

    @app.get(names.ROUTE_HEALTH, response_model=schemas.Health, summary="The process is alive")
    async def health() -> Response:
        return json_response(200, {"status": "ok"})

    @app.get(
        names.ROUTE_METRICS,
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {METRICS_CONTENT_TYPE: {}}, "description": "Prometheus text format."}},
    )
    async def prometheus() -> Response:
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
