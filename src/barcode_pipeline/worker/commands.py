"""``barcode-pipeline worker --name NAME``: one persistence worker process."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from barcode_pipeline import names
from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.logs import setup_logging


def worker(
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="Stable consumer name; a restarted worker re-processes what it held under this name.",
        ),
    ],
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    progress_file: Annotated[
        Path | None, typer.Option(help="Write loop progress here for the supervisor's liveness watchdog.")
    ] = None,
) -> None:
    """Store stream entries in the database in batches; ack after COMMIT; take over dead workers' work."""
    from barcode_pipeline.liveness import ProgressFile, StallHook, install_stack_dump
    from barcode_pipeline.worker.crash import CrashPoints
    from barcode_pipeline.worker.service import Worker, WorkerOptions

    settings = for_role(load_settings(), names.Role.WORKER)
    setup_logging(settings.log_level, f"worker[{name}]", settings.log_format)
    install_stack_dump()
    if metrics_port:
        from barcode_pipeline.web.sideport import serve_side_port

        serve_side_port(metrics_port)
    crash = CrashPoints.from_env(os.environ)
    service = Worker(settings, WorkerOptions(name=name, crash=crash, stall_hook=StallHook.from_env()))
    if progress_file:
        ProgressFile(service.progress, progress_file).start()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.run()


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the root app."""
    app.command()(worker)
