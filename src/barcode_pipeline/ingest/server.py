"""Serve the ingest app (see :mod:`barcode_pipeline.web.server`); each process owns one producer."""

from __future__ import annotations

import logging
import math
from functools import partial

from fastapi import FastAPI

from barcode_pipeline.config import Settings
from barcode_pipeline.web.server import ServerSpec
from barcode_pipeline.web.server import serve as serve_http

log = logging.getLogger(__name__)


def build_app(settings: Settings) -> FastAPI:
    from barcode_pipeline.ingest.app import create_app

    return create_app(settings)


def server_spec(settings: Settings) -> ServerSpec:
    return ServerSpec(
        name="ingest",
        host=settings.ingest.host,
        port=settings.ingest.port,
        processes=settings.ingest.processes,
        app_factory=partial(build_app, settings),
        # In-flight requests wait at most produce_timeout_s for Kafka; allow that plus slack.
        graceful_shutdown_s=math.ceil(settings.kafka.produce_timeout_s) + 5,
        log_level=settings.log_level,
        log_format=settings.log_format,
        tls_cert=settings.ingest.tls_cert,
        tls_key=settings.ingest.tls_key,
        proxies=settings.ingest.proxies,
    )


def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain gracefully (every producer flushed)."""
    spec = server_spec(settings)
    log.info(
        "ingest listening on %s://%s:%d with %d process(es), Kafka at %s",
        spec.scheme,
        settings.ingest.host,
        settings.ingest.port,
        settings.ingest.processes,
        settings.kafka.bootstrap,
    )
    serve_http(spec)
