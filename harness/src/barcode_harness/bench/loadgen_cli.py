"""``python -m barcode_harness.bench.loadgen_cli``: run a load, calibrate, find the generator's ceiling.

A standalone entry so the generator's own figures can be regenerated without the full stack;
the ``barcode-pipeline bench`` commands call the same functions.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from barcode_harness.bench.generator import CeilingStep, calibrate, find_ceiling
from barcode_harness.bench.loadgen import LoadResult, LoadSpec, run_load
from barcode_harness.bench.trivial_server import TrivialServerProcess
from barcode_pipeline.logs import setup_logging

app = typer.Typer(
    name="loadgen",
    help="Open-loop load generator (constant arrival rate, HDR percentiles).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, width=200)
log = logging.getLogger(__name__)


class ModeChoice(StrEnum):
    single = "single"
    batch = "batch"


class ClientChoice(StrEnum):
    raw = "raw"
    aiohttp = "aiohttp"


Rate = Annotated[float, typer.Option(min=0.001, help="Requests per second, over all processes.")]
Duration = Annotated[float, typer.Option(min=0.001, help="Seconds of scheduled load.")]
Processes = Annotated[int, typer.Option(min=1, help="Worker processes sharing the rate.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Max connections (= requests in flight), in total.")]
ModeOpt = Annotated[ModeChoice, typer.Option(help="single: POST /ingest/barcode; batch: /ingest/barcodes.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Scans per batch request.")]
ClientOpt = Annotated[ClientChoice, typer.Option(help="HTTP client implementation.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the full result (JSON) here.")]


def _spec(
    url: str, rate: float, duration: float, processes: int, concurrency: int, mode: ModeChoice, batch: int,
    client: ClientChoice,
) -> LoadSpec:  # fmt: skip
    return LoadSpec(
        url=url,
        rate=rate,
        duration_s=duration,
        processes=processes,
        concurrency_limit=max(concurrency, processes),
        mode=mode.value,
        batch_size=batch,
        client=client.value,
    )


def _table(title: str, results: list[tuple[str, LoadResult]]) -> Table:
    table = Table(title=title)
    for col in ("run", "target/s", "achieved/s", "ok", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
                "max ms", "service p99", "lag p99", "client CPU", "µs CPU/req", "machine CPU"):  # fmt: skip
        table.add_column(col, justify="right")
    for name, r in results:
        table.add_row(
            name,
            f"{r.spec.rate:,.0f}",
            f"{r.achieved_rps:,.0f}",
            f"{r.ok:,}",
            f"{r.errors:,}",
            f"{r.latency.p50_ms:.3f}",
            f"{r.latency.p90_ms:.3f}",
            f"{r.latency.p99_ms:.3f}",
            f"{r.latency.p999_ms:.3f}",
            f"{r.latency.max_ms:.3f}",
            f"{r.service_time.p99_ms:.3f}",
            f"{r.dispatch_lag.p99_ms:.3f}",
            " ".join(f"{c:.0%}" for c in r.client_cpu),
            f"{r.client_cpu_us_per_request:.0f}",
            "?" if r.machine_cpu_busy is None else f"{r.machine_cpu_busy:.0%}",
        )
    return table


def _write(path: Path | None, payload: object) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {path}")


@app.command("run")
def run_cmd(
    url: Annotated[str, typer.Argument(help="Base URL, e.g. http://127.0.0.1:8081")],
    rate: Rate = 1000.0,
    duration: Duration = 10.0,
    processes: Processes = 1,
    concurrency: Concurrency = 512,
    mode: ModeOpt = ModeChoice.single,
    batch_size: BatchSize = 100,
    client: ClientOpt = ClientChoice.raw,
    acked_ids: Annotated[Path | None, typer.Option(help="Write acknowledged scan IDs here.")] = None,
    json_out: JsonOut = None,
) -> None:
    """One open-loop run against a server."""
    setup_logging("INFO", "loadgen")
    spec = replace(
        _spec(url, rate, duration, processes, concurrency, mode, batch_size, client), acked_ids_path=acked_ids
    )
    result = run_load(spec)
    console.print(_table(f"load against {url}", [("run", result)]))
    console.print(f"status: {result.status_counts}  scans acked: {result.scans_acked:,}")
    _write(json_out, result.to_dict())


@app.command("calibrate")
def calibrate_cmd(
    rate: Annotated[list[float] | None, typer.Option(help="Rate(s) to measure (repeatable).")] = None,
    duration: Duration = 10.0,
    processes: Processes = 1,
    concurrency: Concurrency = 512,
    mode: ModeOpt = ModeChoice.single,
    batch_size: BatchSize = 100,
    client: ClientOpt = ClientChoice.raw,
    server_processes: Annotated[int, typer.Option(min=1, help="Trivial endpoint processes.")] = 1,
    json_out: JsonOut = None,
) -> None:
    """The generator's own latency: the same load against the trivial endpoint (started here)."""
    setup_logging("WARNING", "loadgen")
    rows: list[tuple[str, LoadResult]] = []
    for r in rate or [1000.0, 5000.0]:
        spec = _spec("http://127.0.0.1:1", r, duration, processes, concurrency, mode, batch_size, client)
        rows.append((f"{r:,.0f}/s x{processes}", calibrate(spec, server_processes=server_processes)))
    console.print(_table(f"generator overhead (trivial endpoint, {processes} process(es))", rows))
    _write(json_out, [res.to_dict(with_histograms=False) for _, res in rows])


@app.command("ceiling")
def ceiling_cmd(
    processes: Processes = 1,
    concurrency: Concurrency = 512,
    mode: ModeOpt = ModeChoice.single,
    batch_size: BatchSize = 100,
    client: ClientOpt = ClientChoice.raw,
    step_duration: Annotated[float, typer.Option(min=1, help="Seconds per step.")] = 5.0,
    start_rate: Annotated[float, typer.Option(min=1, help="First rate tried.")] = 2000.0,
    max_p99_ms: Annotated[float, typer.Option(help="A step with a higher p99 is not sustained.")] = 20.0,
    server_processes: Annotated[int, typer.Option(min=1, help="Trivial endpoint processes.")] = 1,
    url: Annotated[
        str | None, typer.Option(help="Measure against this server instead of the trivial one.")
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Highest rate the generator sustains (errors 0, >= 99 % of the rate answered, p99 bounded)."""
    setup_logging("WARNING", "loadgen")

    def show(step: CeilingStep) -> None:
        r = step.result
        console.print(
            f"{step.rate:>9,.0f}/s  {'ok ' if step.sustained else 'NO '} achieved {r.achieved_rps:,.0f}/s "
            f"p50 {r.latency.p50_ms:.2f} p99 {r.latency.p99_ms:.2f} ms errors {r.errors} "
            f"cpu {' '.join(f'{c:.0%}' for c in r.client_cpu)} ({r.client_cpu_us_per_request:.0f} µs/req) "
            f"machine {r.machine_cpu_busy or 0:.0%} "
            f"lag p99 {r.dispatch_lag.p99_ms:.2f} ms"
        )

    def search(target: str) -> tuple[float, list[CeilingStep]]:
        template = _spec(target, start_rate, step_duration, processes, concurrency, mode, batch_size, client)
        return find_ceiling(template, start_rate=start_rate, max_p99_ms=max_p99_ms, on_step=show)

    if url is None:
        with TrivialServerProcess(processes=server_processes) as server:
            best, steps = search(server.url)
    else:
        best, steps = search(url)
    console.print(
        f"[bold]sustained ceiling: {best:,.0f} req/s[/bold] ({processes} process(es), {client.value})"
    )
    _write(
        json_out,
        {
            "ceiling_rps": best,
            "steps": [
                {"rate": s.rate, "sustained": s.sustained, **s.result.to_dict(with_histograms=False)}
                for s in steps
            ],
        },
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
