"""``barcode-pipeline run``: the whole pipeline, supervised, until Ctrl-C/SIGTERM (then it drains)."""

from __future__ import annotations

from typing import Annotated

import typer

from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.logs import setup_logging


def run(
    workers: Annotated[int | None, typer.Option(help="Persistence workers to start.")] = None,
    no_stack: Annotated[
        bool, typer.Option("--no-stack", help="Never start the local development stack, even if installed.")
    ] = False,
) -> None:
    """Migrate, then ingest + processor + workers until Ctrl-C/SIGTERM (drains).

    With the development harness installed, the local stack is started first if it is not running;
    otherwise the servers named by BP_KAFKA_BOOTSTRAP, BP_REDIS_URL and BP_DB_URL must be up.
    Every service serves /metrics (ports: README "Operating"); this process exports the backlog gauges.
    """
    from barcode_pipeline.monitoring.exporter import serve as serve_backlog
    from barcode_pipeline.run.pipeline import running_pipeline

    settings = load_settings(workers=workers)
    setup_logging(settings.log_level, "run", settings.log_format)
    with running_pipeline(
        settings,
        metrics=True,
        start_stack=not no_stack,
        stop_on_signals=True,
        health_port=settings.monitoring.metrics_port_base or None,
    ) as sup:
        # BP_METRICS_PORT_BASE=0 turns off run's metrics servers, this one included.
        # ... on the exporter's own credentials (reads only) when they are set.
        exporter = (
            serve_backlog(for_role(settings, "exporter")) if settings.monitoring.metrics_port_base else None
        )
        typer.echo(
            f"pipeline running: POST http://{settings.ingest.host}:{settings.ingest.port}/ingest/barcode"
        )
        sup.wait_forever()
        typer.echo("draining ...")
    if exporter is not None:
        exporter[0].stop()
        exporter[1].shutdown()
    typer.echo("stopped: " + ", ".join(f"{k}={v}" for k, v in sup.exit_codes.items()))


def register(app: typer.Typer) -> None:
    app.command()(run)
