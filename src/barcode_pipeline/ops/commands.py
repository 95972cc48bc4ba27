"""``barcode-pipeline status``: per-stage backlog."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from barcode_pipeline import names
from barcode_pipeline.config import load_settings
from barcode_pipeline.logs import setup_logging

if TYPE_CHECKING:
    from barcode_pipeline.probes.backlog import Backlog


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Kafka consumer lag, stream lengths, undelivered and pending entries per worker, DLQ size."""
    from barcode_pipeline.probes.backlog import measure
    from barcode_pipeline.run.watchdog import read_state

    settings = load_settings()
    setup_logging("WARNING", "status")
    backlog = measure(settings)
    watchdog = read_state(settings)  # None unless a supervisor is running the pipeline
    stalled = list(watchdog["stalled"]) if watchdog else []
    if as_json:
        # Partition numbers are int keys: orjson refuses them without OPT_NON_STR_KEYS.
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        typer.echo(orjson.dumps({**backlog.to_dict(), "watchdog": watchdog}, option=options).decode())
    else:
        table = Table(title="barcode-pipeline backlog")
        table.add_column("stage")
        table.add_column("item")
        table.add_column("count", justify="right")
        table.add_row("kafka", "processor lag (all partitions)", str(backlog.kafka_lag))
        for stream, length in backlog.stream_length.items():
            table.add_row("redis", f"{stream} length / undelivered",
                          f"{length} / {backlog.stream_undelivered.get(stream, 0)}")  # fmt: skip
        for consumer, pending in sorted(backlog.pending_by_consumer.items()):
            table.add_row("workers", f"pending on {consumer}", str(pending))
        table.add_row("dead letters", f"{names.DLQ_STREAM} length", str(backlog.dlq_length))
        table.add_row("redis", "memory used / maxmemory", _memory_text(backlog))
        table.add_row("total", "in flight", str(backlog.in_flight))
        for name, verdict in sorted((watchdog or {}).get("services", {}).items()):
            table.add_row("liveness", name, _liveness_text(verdict))
        Console().print(table)
        for err in backlog.errors:
            typer.echo(f"warning: {err}", err=True)
        if backlog.redis_full:
            typer.echo(
                "warning: Redis is FULL (maxmemory reached): the processor waits and retries, workers keep "
                "acknowledging; free memory or raise maxmemory and the pipeline resumes by itself",
                err=True,
            )
        for name in stalled:
            typer.echo(f"warning: {name} is STALLED (work waiting, no progress); restart pending", err=True)
    raise typer.Exit(1 if backlog.errors or stalled or backlog.redis_full else 0)


def _memory_text(backlog: Backlog) -> str:
    used_mib = backlog.redis_used_bytes / 2**20
    if not backlog.redis_max_bytes:
        return f"{used_mib:,.0f} MiB / unbounded"
    share = backlog.redis_used_bytes / backlog.redis_max_bytes
    full = " FULL" if backlog.redis_full else ""
    return f"{used_mib:,.0f} / {backlog.redis_max_bytes / 2**20:,.0f} MiB ({share:.0%}){full}"


def _liveness_text(verdict: dict[str, object]) -> str:
    """The watchdog's verdict on one service, e.g. ``STALLED: 1544 waiting, no progress for 31s``."""
    state = str(verdict.get("state"))
    restarts = f", {verdict['restarts']} watchdog restarts" if verdict.get("restarts") else ""
    if state == "stalled":
        quiet = verdict.get("quiet_s")
        return f"STALLED: {verdict.get('backlog')} waiting, no progress for {quiet}s{restarts}"
    if state == "waiting":
        return f"waiting on a dependency (down or slow){restarts}"
    return f"{state}{restarts}"


def register(app: typer.Typer) -> None:
    app.command()(status)
