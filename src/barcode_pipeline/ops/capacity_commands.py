"""``barcode-pipeline capacity --rate N``: the capacity plan for the current settings, printed."""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from barcode_pipeline.config import Settings, load_settings
from barcode_pipeline.logs import setup_logging
from barcode_pipeline.ops.capacity import (
    GIB,
    HEADROOM,
    Bounds,
    CpuLine,
    Line,
    cpu_markdown,
    cpu_plan,
    markdown,
    plan,
    summary,
    to_dict,
)

log = logging.getLogger(__name__)

DEFAULT_REDIS_MEMORY = 4 * GIB  # the stacks' maxmemory, when the configured Redis cannot be asked


def _maxmemory(settings: Settings) -> tuple[int, str]:
    """The configured Redis's maxmemory, or the stacks' default when it cannot be asked or is unset."""
    from barcode_pipeline.adapters import redis as redis_adapter

    try:
        client = redis_adapter.client(settings)
        try:
            value = redis_adapter.maxmemory(client)
        finally:
            client.close()
    except Exception as exc:  # any refusal or outage: the plan still prints, saying so
        log.debug("maxmemory not read: %s", exc)
        return DEFAULT_REDIS_MEMORY, "the stacks' default (Redis not asked)"
    if value <= 0:
        return DEFAULT_REDIS_MEMORY, "unset in Redis: planned against the stacks' default"
    return value, "Redis's maxmemory"


def _free_at(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (or its nearest existing parent)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _fills_text(line: Line) -> str:
    if line.fills_in_days is None:
        return f"never ({line.share:.0%} of it)"
    return f"[red]in {line.fills_in_days:,.1f} days[/]"


def _table(rate: float, lines: list[Line], memory_source: str) -> Table:
    table = Table(title=f"capacity at {rate:,g} scans/s (Redis bound: {memory_source})")
    for col in ("store", "written per day", "held at its window / retention", "bound", "fills"):
        table.add_column(col)
    for line in lines:
        table.add_row(line.store, _gib(line.per_day), _gib(line.steady), _gib(line.bound), _fills_text(line))
    return table


def _cpu_table(rate: float, lines: list[CpuLine], host_cores: int) -> Table:
    table = Table(title=f"CPU at {rate:,g} scans/s (hosts of {host_cores} cores, {HEADROOM:.0%} kept free)")
    for col in ("tier", "µs per scan", "cores", "hosts", "note"):
        table.add_column(col)
    for c in lines:
        table.add_row(c.tier, f"{c.us_per_scan:.0f}", f"{c.cores:.1f}", str(c.hosts), c.note)
    return table


def _gib(value: float) -> str:
    return f"{value / GIB:,.1f} GiB"


def capacity(
    rate: Annotated[
        list[float], typer.Option(min=0.001, help="Unique scans per second to plan for (repeatable).")
    ],
    days: Annotated[
        int | None, typer.Option(min=1, help="The table's retention in days [BP_DB_RETENTION_DAYS].")
    ] = None,
    batch_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of scans sent through the batch API [0].")
    ] = 0.0,
    redis_memory: Annotated[
        float | None, typer.Option(min=0.001, help="GiB Redis may use [its maxmemory].")
    ] = None,
    disk: Annotated[
        float | None, typer.Option(min=0.001, help="GiB of each disk below, unless given [free space].")
    ] = None,
    redis_disk: Annotated[float | None, typer.Option(min=0.001, help="GiB for the AOF [--disk].")] = None,
    kafka_disk: Annotated[
        float | None, typer.Option(min=0.001, help="GiB for Kafka, all brokers [--disk].")
    ] = None,
    db_disk: Annotated[float | None, typer.Option(min=0.001, help="GiB for the database [--disk].")] = None,
    host_cores: Annotated[int, typer.Option(min=1, help="Cores of one host, for the CPU plan [8].")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    as_markdown: Annotated[
        bool, typer.Option("--markdown", help="Markdown tables (as in the docs).")
    ] = False,
) -> None:
    """Each store's size at RATE scans/s: per day, at its window or retention, against its bound;
    what fills first and when, and the settings that move it. Disks default to the free space
    where the stack keeps its data (BP_STATE_DIR)."""
    setup_logging("WARNING", "capacity")
    settings = load_settings()
    memory, memory_source = (
        (int(redis_memory * GIB), "--redis-memory") if redis_memory else _maxmemory(settings)
    )
    free = int(disk * GIB) if disk else _free_at(settings.state_dir)

    def size(given: float | None) -> int:
        return int(given * GIB) if given else free

    bounds = Bounds(memory, size(redis_disk), size(kafka_disk), size(db_disk))
    plans = {r: plan(settings, r, bounds, days=days, batch_share=batch_share) for r in rate}
    cpu = {r: cpu_plan(settings, r, batch_share=batch_share, host_cores=host_cores) for r in rate}
    if as_json:
        out = [
            {
                "rate": r,
                "lines": to_dict(lines),
                "summary": summary(lines),
                "cpu": [asdict(c) for c in cpu[r]],
            }
            for r, lines in plans.items()
        ]
        typer.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return
    if as_markdown:
        typer.echo(markdown(plans) + "\n" + cpu_markdown(cpu, host_cores))
        return
    console = Console(width=max(100, shutil.get_terminal_size().columns))
    for r, lines in plans.items():
        console.print(_table(r, lines, memory_source))
        for line in lines:
            typer.echo(f"{line.store}: {line.change}")
        typer.echo(summary(lines))
        console.print(_cpu_table(r, cpu[r], host_cores))


def register(app: typer.Typer) -> None:
    app.command()(capacity)
