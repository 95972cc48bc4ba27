"""``barcode-pipeline run`` (the whole pipeline, supervised) and ``barcode-pipeline demo``."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from barcode_pipeline.config import load_settings
from barcode_pipeline.logs import setup_logging


def run(
    workers: Annotated[int | None, typer.Option(help="Persistence workers to start.")] = None,
    no_stack: Annotated[bool, typer.Option("--no-stack", help="Use already running Kafka/Redis/DB.")] = False,
) -> None:
    """Stack up if needed, migrate, then ingest + processor + workers until Ctrl-C/SIGTERM (drains)."""
    from barcode_pipeline.run.startup import prepare, wait_http_ok
    from barcode_pipeline.run.supervisor import Supervisor, pipeline_specs

    settings = load_settings(workers=workers)
    setup_logging(settings.log_level, "run")
    prepare(settings, start_stack=not no_stack)
    sup = Supervisor(settings, pipeline_specs(settings))

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        sup._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup.start()
    wait_http_ok(f"http://{settings.ingest_host}:{settings.ingest_port}/ready")
    typer.echo(f"pipeline running: POST http://{settings.ingest_host}:{settings.ingest_port}/ingest/barcode")
    sup.wait_forever()
    typer.echo("draining ...")
    codes = sup.stop()
    typer.echo("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()))


def register(app: typer.Typer) -> None:
    app.command()(run)
