"""``python -m barcode_harness.bench.loadgen_cli``: run a load, calibrate, find the generator's ceiling.

The generator's own limits, so a benchmark can tell the client's from the server's: the same load
against a trivial endpoint (``calibrate``) and the highest rate it sustains there (``find_ceiling``).
A standalone entry, so these figures can be regenerated without the full stack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from barcode_harness.bench.loadgen import ClientKind, LoadResult, LoadSpec, Mode, run_load
from barcode_harness.bench.loads import grow_then_bisect
from barcode_harness.bench.trivial_server import TrivialServerProcess
from barcode_pipeline.logs import setup_logging


def calibrate(spec: LoadSpec, *, server_processes: int = 1) -> LoadResult:
    """The same load against the trivial endpoint (on the generator's cores, as a real server under test):
    the latency the generator itself adds at this rate."""
    with TrivialServerProcess(processes=server_processes) as server:
        return run_load(replace(spec, url=server.url, acked_ids_path=None))


@dataclass(frozen=True)
class CeilingStep:
    rate: float
    sustained: bool
    result: LoadResult


def find_ceiling(
    template: LoadSpec,
    *,
    start_rate: float = 1000.0,
    growth: float = 1.5,
    refine_steps: int = 3,
    max_rate: float = 200_000.0,
    max_p99_ms: float = 20.0,
    on_step: Callable[[CeilingStep], None] | None = None,
) -> tuple[float, list[CeilingStep]]:
    """Highest rate of ``template`` (url and all) that is sustained: grow geometrically, then bisect
    (against the trivial endpoint: the generator's own ceiling on this machine)."""

    def attempt(rate: float) -> CeilingStep:
        result = run_load(replace(template, rate=rate, acked_ids_path=None))
        step = CeilingStep(rate, result.sustained(max_p99_ms=max_p99_ms), result)
        if on_step is not None:
            on_step(step)
        return step

    return grow_then_bisect(attempt, start_rate, growth, max_rate, refine_steps)


app = typer.Typer(
    name="loadgen",
    help="Open-loop load generator (constant arrival rate, HDR percentiles).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, width=200)

Rate = Annotated[float, typer.Option(min=0.001, help="Requests per second, over all processes.")]
Duration = Annotated[float, typer.Option(min=0.001, help="Seconds of scheduled load.")]
Processes = Annotated[int, typer.Option(min=1, help="Worker processes sharing the rate.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Max connections (= requests in flight), in total.")]
ModeOpt = Annotated[Mode, typer.Option(help="single: POST /ingest/barcode; batch: /ingest/barcodes.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Scans per batch request.")]
ClientOpt = Annotated[ClientKind, typer.Option(help="HTTP client implementation.")]
ServerProcesses = Annotated[int, typer.Option(min=1, help="Trivial endpoint processes.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the full result (JSON) here.")]


def _spec(
    url: str, rate: float, duration: float, processes: int, concurrency: int, mode: Mode, batch: int,
    client: ClientKind,
) -> LoadSpec:  # fmt: skip
    """Positional, in the order of LoadSpec's fields."""
    return LoadSpec(url, rate, duration, max(concurrency, processes), mode, batch, processes, client)


_COLUMNS: tuple[tuple[str, Callable[[LoadResult], str]], ...] = (
    ("target/s", lambda r: f"{r.spec.rate:,.0f}"),
    ("achieved/s", lambda r: f"{r.achieved_rps:,.0f}"),
    ("ok", lambda r: f"{r.ok:,}"),
    ("errors", lambda r: f"{r.errors:,}"),
    ("p50 ms", lambda r: f"{r.latency.p50_ms:.3f}"),
    ("p90 ms", lambda r: f"{r.latency.p90_ms:.3f}"),
    ("p99 ms", lambda r: f"{r.latency.p99_ms:.3f}"),
    ("p99.9 ms", lambda r: f"{r.latency.p999_ms:.3f}"),
    ("max ms", lambda r: f"{r.latency.max_ms:.3f}"),
    ("service p99", lambda r: f"{r.service_time.p99_ms:.3f}"),
    ("lag p99", lambda r: f"{r.dispatch_lag.p99_ms:.3f}"),
    ("client CPU", lambda r: " ".join(f"{c:.0%}" for c in r.client_cpu)),
    ("µs CPU/req", lambda r: f"{r.client_cpu_us_per_request:.0f}"),
    ("machine CPU", lambda r: "?" if r.machine_cpu_busy is None else f"{r.machine_cpu_busy:.0%}"),
)


def _table(title: str, results: list[tuple[str, LoadResult]]) -> Table:
    table = Table(title=title)
    for col in ("run", *(name for name, _ in _COLUMNS)):
        table.add_column(col, justify="right")
    for name, r in results:
        table.add_row(name, *(cell(r) for _, cell in _COLUMNS))
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
    mode: ModeOpt = "single",
    batch_size: BatchSize = 100,
    client: ClientOpt = "raw",
    acked_ids: Annotated[Path | None, typer.Option(help="Write acknowledged scan IDs here.")] = None,
    json_out: JsonOut = None,
) -> None:
    """One open-loop run against a server."""
    setup_logging("INFO", "loadgen")
    spec = _spec(url, rate, duration, processes, concurrency, mode, batch_size, client)
    result = run_load(replace(spec, acked_ids_path=acked_ids))
    console.print(_table(f"load against {url}", [("run", result)]))
    console.print(f"status: {result.status_counts}  scans acked: {result.scans_acked:,}")
    _write(json_out, result.to_dict())


@app.command("calibrate")
def calibrate_cmd(
    rate: Annotated[list[float] | None, typer.Option(help="Rate(s) to measure (repeatable).")] = None,
    duration: Duration = 10.0,
    processes: Processes = 1,
    concurrency: Concurrency = 512,
    mode: ModeOpt = "single",
    batch_size: BatchSize = 100,
    client: ClientOpt = "raw",
    server_processes: ServerProcesses = 1,
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
    mode: ModeOpt = "single",
    batch_size: BatchSize = 100,
    client: ClientOpt = "raw",
    step_duration: Annotated[float, typer.Option(min=1, help="Seconds per step.")] = 5.0,
    start_rate: Annotated[float, typer.Option(min=1, help="First rate tried.")] = 2000.0,
    max_p99_ms: Annotated[float, typer.Option(help="A step with a higher p99 is not sustained.")] = 20.0,
    server_processes: ServerProcesses = 1,
    url: Annotated[
        str | None, typer.Option(help="Measure against this server instead of the trivial one.")
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Highest rate the generator sustains (errors 0, >= 99 % of the rate answered, p99 bounded)."""
    setup_logging("WARNING", "loadgen")

    def show(step: CeilingStep) -> None:
        cells = ", ".join(f"{name} {cell(step.result)}" for name, cell in _COLUMNS)
        console.print(f"{'ok' if step.sustained else 'NO'}: {cells}")

    with contextlib.ExitStack() as stack:
        target = url or stack.enter_context(TrivialServerProcess(processes=server_processes)).url
        template = _spec(target, start_rate, step_duration, processes, concurrency, mode, batch_size, client)
        best, steps = find_ceiling(template, start_rate=start_rate, max_p99_ms=max_p99_ms, on_step=show)
    console.print(f"[bold]sustained ceiling: {best:,.0f} req/s[/bold] ({processes} process(es), {client})")
    rows = [
        {"rate": s.rate, "sustained": s.sustained, **s.result.to_dict(with_histograms=False)} for s in steps
    ]
    _write(json_out, {"ceiling_rps": best, "steps": rows})


if __name__ == "__main__":
    app()
