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
    monitoring: Annotated[
        bool,
        typer.Option("--monitoring", help="Also start Prometheus and its exporters (stack up --monitoring)."),
    ] = False,
) -> None:
    """Stack up if needed, migrate, then ingest + processor + workers until Ctrl-C/SIGTERM (drains).

    Every service serves /metrics (ports: README "Operating"); this process exports the backlog gauges.
    """
    from barcode_pipeline.monitoring.exporter import serve as serve_backlog
    from barcode_pipeline.run.startup import prepare, wait_http_ok
    from barcode_pipeline.run.supervisor import Supervisor, pipeline_specs

    settings = load_settings(workers=workers)
    setup_logging(settings.log_level, "run", settings.log_format)
    if monitoring and not no_stack:
        from barcode_pipeline.stack.manager import StackManager

        StackManager(settings, monitoring=True).up(quiet=True)
    prepare(settings, start_stack=not no_stack)
    sup = Supervisor(settings, pipeline_specs(settings))
    backlog, backlog_server = serve_backlog(settings)

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        sup.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup.start()
    wait_http_ok(f"http://{settings.ingest_host}:{settings.ingest_port}/ready")
    typer.echo(f"pipeline running: POST http://{settings.ingest_host}:{settings.ingest_port}/ingest/barcode")
    sup.wait_forever()
    typer.echo("draining ...")
    codes = sup.stop()
    backlog.stop()
    backlog_server.shutdown()
    typer.echo("stopped: " + ", ".join(f"{k}={v}" for k, v in codes.items()))


def demo(
    rate: Annotated[float, typer.Option(help="Scans per second.")] = 300.0,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 10.0,
    duplicates: Annotated[float, typer.Option(help="Share of scans resent by the client (0-1).")] = 0.1,
) -> None:
    """Stack + pipeline + a short scanner load, then a summary. Exit 1 if a scan was lost or doubled."""
    from rich.console import Console
    from rich.table import Table

    from barcode_pipeline.errors import ConfigError
    from barcode_pipeline.run.demo import DemoSpec, run_demo

    if rate <= 0 or duration <= 0 or not 0 <= duplicates < 1:
        raise ConfigError("--rate and --duration must be > 0 and --duplicates within [0, 1)")
    settings = load_settings()
    setup_logging("WARNING", "demo")
    console = Console()
    with console.status(f"demo: pipeline up, sending {rate:.0f} scans/s for {duration:.0f}s ..."):
        summary = run_demo(settings, DemoSpec(rate=rate, duration_s=duration, duplicate_ratio=duplicates))
    table = Table(title="barcode-pipeline demo (all services share this machine's cores)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    ok = summary["lost"] == 0 and summary["duplicate_rows"] == 0
    console.print(
        "[green]every accepted scan stored exactly once[/]" if ok else "[red]LOSS OR DUPLICATES DETECTED[/]"
    )
    console.print("the stack keeps running; stop it with: .venv/bin/barcode-pipeline stack down")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(demo)
