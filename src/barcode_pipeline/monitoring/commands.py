"""``barcode-pipeline top`` and ``barcode-pipeline monitor exporter|config|check-dashboards``.

The development harness adds ``monitor snapshot`` (a PNG, with matplotlib) to the same group.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from barcode_pipeline.config import for_role, load_settings
from barcode_pipeline.logs import setup_logging

monitor_app = typer.Typer(
    help="Monitoring: the backlog exporter and the Prometheus config.", no_args_is_help=True
)


def top(
    refresh: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 1.0,
    iterations: Annotated[int | None, typer.Option(help="Stop after this many refreshes.", min=1)] = None,
) -> None:
    """Live view: rates per stage, latency, lag, backlog, pending, DLQ, freshness, warnings. Ctrl-C quits."""
    from barcode_pipeline.monitoring.top import run_top

    settings = load_settings()
    setup_logging("ERROR", "top")  # log lines would tear the live screen
    run_top(settings, refresh_s=refresh, iterations=iterations)


@monitor_app.command()
def exporter() -> None:
    """Serve the backlog gauges (Kafka lag, streams, pending, DLQ) on BP_EXPORTER_PORT until SIGTERM."""
    from barcode_pipeline.monitoring.exporter import serve

    settings = for_role(load_settings(), "exporter")
    setup_logging(settings.log_level, "exporter", settings.log_format)
    collector, server = serve(settings)
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    done.wait()
    collector.stop()
    server.shutdown()


@monitor_app.command()
def config() -> None:
    """Print the scrape config `stack up --monitoring` uses (targets from the current settings)."""
    from barcode_pipeline.monitoring.promconfig import render_config

    settings = load_settings()
    rule_dir = (settings.state_dir / "prometheus" / "rules").resolve()
    typer.echo(render_config(settings, rule_dir), nl=False)


@monitor_app.command("check-dashboards")
def check_dashboards(
    url: Annotated[str | None, typer.Option(help="Prometheus base URL (default: the local one).")] = None,
) -> None:
    """Run every Grafana panel query against Prometheus; exit 1 if one errors or returns no series."""
    from barcode_pipeline.monitoring import dashboards

    settings = load_settings()
    base = url or f"http://127.0.0.1:{settings.monitoring.prometheus_port}"
    bad = 0
    for path in dashboards.dashboard_files():
        for query in dashboards.panel_queries(path):
            result = dashboards.check(base, query)
            ok = result.error is None and result.series > 0
            bad += not ok
            status = "ok" if ok else (f"ERROR {result.error}" if result.error else "NO SERIES")
            typer.echo(f"{status:>9}  {result.series:3d}  {query.panel} [{query.ref}]")
    raise typer.Exit(1 if bad else 0)


def register(app: typer.Typer) -> None:
    app.command()(top)
    app.add_typer(monitor_app, name="monitor")
