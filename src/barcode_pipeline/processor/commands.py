"""``barcode-pipeline processor`` and ``barcode-pipeline replay``."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from barcode_pipeline import names
from barcode_pipeline.clitime import parse_time_ms
from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging


def _parse_offsets(text: str) -> dict[int, int]:
    """``0:120,1:98`` -> {0: 120, 1: 98}."""
    try:
        return {int(p): int(o) for p, o in (item.split(":") for item in text.split(",") if item)}
    except ValueError:
        raise ConfigError(f"--from-offsets must look like 0:120,1:98, got {text!r}") from None


def processor(
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    instance: Annotated[
        str | None,
        typer.Option(help="Static group membership under this name: a restart resumes without a rebalance."),
    ] = None,
    progress_file: Annotated[
        Path | None, typer.Option(help="Write loop progress here for the supervisor's liveness watchdog.")
    ] = None,
) -> None:
    """Consume scans from Kafka, deduplicate, and publish them to the sharded Redis streams."""
    from barcode_pipeline.liveness import ProgressFile, StallHook, install_stack_dump
    from barcode_pipeline.processor.service import Processor

    settings = for_role(load_settings(), names.Role.PROCESSOR)
    setup_logging(settings.log_level, "processor", settings.log_format)
    install_stack_dump()
    if metrics_port:
        from barcode_pipeline.web.sideport import serve_side_port

        serve_side_port(metrics_port)
    proc = Processor(settings, instance=instance, stall_hook=StallHook.from_env())
    if progress_file:
        ProgressFile(proc.progress, progress_file).start()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        proc.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proc.run()


def replay(
    since: Annotated[
        str | None, typer.Option(help="Re-drive events appended since this time (ISO-8601 or epoch ms).")
    ] = None,
    from_offsets: Annotated[
        str | None, typer.Option(help="Start offsets per partition, e.g. 0:120,1:98.")
    ] = None,
) -> None:
    """Re-feed the processor path from Kafka (after Redis lost data, say). Idempotent."""
    from barcode_pipeline.processor.replay import replay as do_replay

    if (since is None) == (from_offsets is None):
        raise ConfigError("give exactly one of --since or --from-offsets")
    settings = load_settings()
    setup_logging(settings.log_level, "replay")
    outcome = do_replay(
        settings,
        since_ms=parse_time_ms(since) if since else None,
        from_offsets=_parse_offsets(from_offsets) if from_offsets else None,
    )
    typer.echo(
        f"replayed: published {outcome.published}, duplicates skipped {outcome.duplicates}, "
        f"dead-lettered {outcome.dead_lettered}"
    )


def register(app: typer.Typer) -> None:
    app.command()(processor)
    app.command()(replay)
