"""``barcode-pipeline scanner``: simulated center PCs sending scans through a durable outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer
from rich import progress as rp
from rich.console import Console
from rich.table import Column, Table

from barcode_harness.scanner.outbox import Outbox, OutboxCounts, outbox_status
from barcode_harness.scanner.scans import device_ids
from barcode_harness.scanner.simulator import Mode, Simulator, SimulatorConfig, SimulatorReport, now_ms
from barcode_harness.settings import HarnessSettings, load_harness_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging

log = logging.getLogger(__name__)

EXIT_NOT_DRAINED = 3  # scans were left pending in the outbox


def failed_attempts(counts: OutboxCounts) -> int:
    """Attempts that did not resolve their scan: every acked or rejected row ended with exactly one."""
    return counts.attempts - counts.acked - counts.rejected


def _print_report(console: Console, report: SimulatorReport, as_json: bool) -> None:
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    run = report.run
    table = Table("", Column("this run", justify="right"), Column("outbox (all runs)", justify="right"))
    table.title = f"scanner run ({report.elapsed_s:.1f} s)"
    table.add_row("generated", f"{run.generated:,} ({run.duplicates:,} resends)", f"{report.outbox.total:,}")
    table.add_row("HTTP requests", f"{run.requests:,}", "")
    table.add_row("scans sent at least once", "", f"{report.outbox.sent:,}")
    table.add_row("acknowledged", f"{run.acked:,}", f"{report.outbox.acked:,}")
    table.add_row("failed attempts (retried)", f"{run.retried:,}", f"{failed_attempts(report.outbox):,}")
    table.add_row("rejected (4xx, kept)", f"{run.rejected:,}", f"{report.outbox.rejected:,}")
    table.add_row("pending", f"{report.outbox.pending:,}", f"{report.outbox.pending:,}")
    table.add_row("resumed from a previous run", f"{run.recovered:,}", "")
    console.print(table)
    if not report.drained:
        console.print(
            f"[yellow]{report.outbox.pending:,} scans still pending: they are sent on the next run "
            "with the same --outbox[/yellow]"
        )


async def _run_with_progress(config: SimulatorConfig, console: Console, quiet: bool) -> SimulatorReport:
    simulator = Simulator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        console.print(f"[yellow]{sig.name}: stopping (pending scans stay in the outbox)[/yellow]")
        stop.set()
        loop.remove_signal_handler(sig)  # a second signal ends the process the default way

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)

    progress = rp.Progress(
        rp.SpinnerColumn(),
        rp.TextColumn("{task.description}"),
        rp.BarColumn(),
        rp.MofNCompleteColumn(),
        rp.TextColumn("{task.fields[info]}"),
        rp.TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    run_task = asyncio.ensure_future(simulator.run(stop))
    with progress:
        bar = progress.add_task("scanner", total=config.count or None, info="")
        while not run_task.done():
            s = simulator.stats
            up = "up" if s.endpoint_up else "[red]DOWN[/red]"
            progress.update(
                bar,
                completed=s.acked + s.rejected,
                info=(
                    f"gen {s.generated:,} sent {s.requests:,} ack {s.acked:,} pending {s.pending:,} "
                    f"rej {s.rejected:,} retries {s.retried:,} ingest {up}"
                ),
            )
            await asyncio.wait({run_task}, timeout=0.25)
    return run_task.result()


def scanner(
    url: Annotated[
        str | None, typer.Option(help="Ingest base URL (default: http://BP_INGEST_HOST:BP_INGEST_PORT).")
    ] = None,
    outbox: Annotated[
        Path | None, typer.Option(help="Outbox file, SQLite (default: BP_STATE_DIR/scanner/outbox.sqlite3).")
    ] = None,
    devices: Annotated[
        int,
        typer.Option(min=1, help="Number of devices; the first three are the seeded SEOUL-CENTER-PC-00x."),
    ] = 3,
    device: Annotated[
        list[str] | None, typer.Option(help="Explicit device ID (repeatable); overrides --devices.")
    ] = None,
    rate: Annotated[float, typer.Option(min=0.001, help="Scans per second per device.")] = 10.0,
    count: Annotated[
        int | None, typer.Option(min=0, help="Total scans to generate (0 = only deliver what is pending).")
    ] = None,
    duration: Annotated[float | None, typer.Option(min=0.001, help="Seconds to generate scans for.")] = None,
    mode: Annotated[Mode, typer.Option(help="One request per scan, or batches.")] = "single",
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size trigger (batch mode).")] = 100,
    batch_interval: Annotated[float, typer.Option(min=0.001, help="Batch time trigger, seconds.")] = 1.0,
    duplicate_ratio: Annotated[
        float,
        typer.Option(min=0.0, max=0.99, help="Share of scans that resend an earlier scan (same scanId)."),
    ] = 0.0,
    itf14_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of ITF-14 (case) barcodes; the rest are EAN-13.")
    ] = 0.3,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests (or batches) in flight per device.")] = 4,
    timeout: Annotated[float, typer.Option(min=0.01, help="HTTP request timeout, seconds.")] = 10.0,
    drain_timeout: Annotated[
        float, typer.Option(help="After generating, wait this long for pending scans (< 0: forever).")
    ] = 30.0,
    synchronous: Annotated[
        Literal["full", "normal"],
        typer.Option(help="SQLite synchronous mode: full survives power loss, normal a crash."),
    ] = "full",
    seed: Annotated[int | None, typer.Option(help="Random seed (barcodes, resends, jitter).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Scanner API key (env BP_INGEST_API_KEY). Without one, a key 'harness-scanner' for every "
            "device is created in BP_DB_URL's database (replacing the last one); --no-key sends none."
        ),
    ] = None,
    no_key: Annotated[
        bool, typer.Option("--no-key", help="Send no key (BP_INGEST_AUTH=off, or a trusted network).")
    ] = False,
    status: Annotated[bool, typer.Option("--status", help="Print the outbox counts and exit.")] = False,
    requeue_rejected: Annotated[
        bool, typer.Option("--requeue-rejected", help="Make rejected scans pending again, then exit.")
    ] = False,
    purge_acked: Annotated[
        bool, typer.Option("--purge-acked", help="Delete acknowledged rows (counts are kept), then exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Simulate center PCs: generate scans and deliver each one at least once, through a durable outbox.

    Each scan is committed to the local outbox before it is sent and stays pending until a 2xx.
    Failures are retried with back-off; 4xx answers (except 408/429) are kept as rejected.
    Run again with the same --outbox to resume. Exit code 3: scans were left pending.
    """
    settings = load_harness_settings()
    setup_logging(settings.log_level, "scanner")
    path = outbox or settings.state_dir / "scanner" / "outbox.sqlite3"
    console = Console(stderr=not as_json)
    if status or requeue_rejected or purge_acked:
        _maintain(path, console, requeue=requeue_rejected, purge=purge_acked, as_json=as_json)
        return
    if count is not None and duration is not None:
        raise ConfigError("give --count or --duration, not both", component="scanner")
    config = SimulatorConfig(
        url=url or f"http://{settings.ingest.host}:{settings.ingest.port}",
        outbox_path=path,
        devices=tuple(device) if device else device_ids(devices),
        rate_per_device=rate,
        count=count,
        duration_s=duration,
        mode=mode,
        batch_size=batch_size,
        batch_interval_s=batch_interval,
        duplicate_ratio=duplicate_ratio,
        itf14_ratio=itf14_ratio,
        concurrency=concurrency,
        request_timeout_s=timeout,
        drain_timeout_s=None if drain_timeout < 0 else drain_timeout,
        synchronous="FULL" if synchronous == "full" else "NORMAL",
        seed=seed,
        api_key="" if no_key else (api_key or settings.ingest_api_key or _own_key(settings)),
    )
    report = asyncio.run(_run_with_progress(config, console, quiet or as_json))
    _print_report(console, report, as_json)
    if not report.drained:
        raise typer.Exit(EXIT_NOT_DRAINED)


def _maintain(path: Path, console: Console, *, requeue: bool, purge: bool, as_json: bool) -> None:
    """Maintenance actions on an outbox (the status read works while a simulator is running)."""
    if requeue or purge:
        outbox_status(path)  # refuses a missing file, or one that is not an outbox, before any change
        with contextlib.closing(Outbox(path)) as box:
            if requeue:
                console.print(f"requeued {box.requeue_rejected(now_ms()):,} rejected scans")
            if purge:
                console.print(f"purged {box.purge_acked():,} acknowledged rows")
    counts = outbox_status(path)
    if as_json:
        typer.echo(orjson.dumps({"outbox": str(path), **asdict(counts)}).decode())
        return
    console.print(f"outbox {path} at {time.strftime('%H:%M:%S')}")
    table = Table(show_header=False)
    for key, value in [*asdict(counts).items(), ("failed attempts", failed_attempts(counts))]:
        table.add_row(key, f"{value:,}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""
    app.command("scanner")(scanner)


def _own_key(settings: HarnessSettings) -> str:
    """Create the simulator's own key (as ``keys create`` would), then wait until every ingest
    process has refreshed its keys, or the first scans would be refused (401)."""
    from barcode_harness.keys import with_harness_key

    created = time.monotonic()
    key = with_harness_key(settings, "scanner", start_stack=False).ingest_api_key
    if key:
        log.info(
            "created scanner key harness-scanner; ingest knows it within %.1f s", settings.auth.refresh_s
        )
        time.sleep(max(0.0, created + settings.auth.refresh_s + 0.5 - time.monotonic()))
    return key
