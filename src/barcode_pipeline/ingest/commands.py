"""CLI commands of this subsystem (registered by ``barcode_pipeline.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from barcode_pipeline import names
from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.logs import setup_logging


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""

    @app.command("ingest")
    def ingest(
        host: Annotated[str | None, typer.Option(help="Interface to bind (env BP_INGEST_HOST).")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port (env BP_INGEST_PORT, default 8081).")] = None,
        processes: Annotated[
            int | None,
            typer.Option(min=1, help="Server processes on the port (env BP_INGEST_PROCESSES, default 2)."),
        ] = None,
        kafka_bootstrap: Annotated[
            str | None, typer.Option(help="Kafka bootstrap servers (env BP_KAFKA_BOOTSTRAP).")
        ] = None,
        produce_timeout: Annotated[
            float | None,
            typer.Option(help="Seconds to wait for Kafka's confirmation before answering 503."),
        ] = None,
        log_level: Annotated[str | None, typer.Option(help="Log level (env BP_LOG_LEVEL).")] = None,
    ) -> None:
        """Run the ingest HTTP API (scans -> Kafka; 202 only after Kafka confirmed the write)."""
        settings = load_settings(
            ingest_host=host,
            ingest_port=port,
            ingest_processes=processes,
            kafka_bootstrap=kafka_bootstrap,
            produce_timeout_s=produce_timeout,
            log_level=log_level,
        )
        settings = for_role(settings, names.Role.INGEST)
        setup_logging(settings.log_level, "ingest", settings.log_format)
        # Imported here so other commands do not pay for FastAPI/uvicorn at CLI start-up.
        from barcode_pipeline.ingest.server import serve

        serve(settings)
