"""CLI commands of this subsystem (registered by ``barcode_pipeline.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from barcode_pipeline import names
from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.legacy.pool import DEFAULT_TIMEOUT_S
from barcode_pipeline.logs import setup_logging


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""

    @app.command("legacy")
    def legacy(
        host: Annotated[str | None, typer.Option(help="Interface to bind (env BP_LEGACY_HOST).")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port (env BP_LEGACY_PORT, default 8080).")] = None,
        processes: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Server processes, the same budget as ingest (env BP_INGEST_PROCESSES, default 2).",
            ),
        ] = None,
        pool_size: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="DB connections in total, split over the processes "
                "(env BP_LEGACY_POOL_SIZE, default 10).",
            ),
        ] = None,
        threads: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Worker threads in total, split over the processes (env BP_LEGACY_THREADS, default 40).",
            ),
        ] = None,
        pool_timeout: Annotated[
            float,
            typer.Option(min=0.001, help="Seconds a request waits for a free DB connection before a 503."),
        ] = DEFAULT_TIMEOUT_S,
        log_level: Annotated[str | None, typer.Option(help="Log level (env BP_LOG_LEVEL).")] = None,
    ) -> None:
        """Run the legacy synchronous baseline (lookup + row-by-row INSERT + COMMIT before answering)."""
        settings = load_settings(
            legacy_host=host,
            legacy_port=port,
            ingest_processes=processes,
            legacy_pool_size=pool_size,
            legacy_threads=threads,
            log_level=log_level,
        )
        # No --db-url: a password on the command line is visible to every local user (ps). The URL
        # comes from BP_LEGACY_DB_URL (or BP_DB_URL), or their _FILE forms.
        settings = for_role(settings, names.Role.LEGACY)
        setup_logging(settings.log_level, "legacy", settings.log_format)
        # Imported here so other commands do not pay for FastAPI/uvicorn at CLI start-up.
        from barcode_pipeline.legacy.server import serve

        serve(settings, pool_timeout_s=pool_timeout)
