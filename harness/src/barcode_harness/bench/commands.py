"""``barcode-pipeline bench compare|isolation|max|docs``: one command per benchmark.

Each command brings up what it needs (the local stack unless ``--no-stack``, a fresh bench database
and an empty Redis database 1, the pipeline and the legacy server under a supervisor), runs, and
writes JSON + Markdown + PNG charts into a new ``bench/results/<timestamp>/`` folder; the summary
printed at the end points there. ``--quick`` is a short preset for trying things out; the defaults
are the full benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from barcode_harness.settings import HarnessSettings, load_harness_settings
from barcode_pipeline.logs import setup_logging

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: legacy vs async, DB-contention isolation, maximum sustained rates. "
    "Results go to bench/results/<timestamp>/ (JSON, Markdown, PNG).",
    no_args_is_help=True,
    add_completion=False,
)

Quick = Annotated[bool, typer.Option("--quick", help="Short preset (seconds per phase), for a first look.")]
Out = Annotated[Path, typer.Option("--out", help="Base folder; a <timestamp>/ folder is created in it.")]
NoStack = Annotated[
    bool,
    typer.Option(
        "--no-stack", help="Use already running Kafka/Redis/MariaDB (connection settings from env)."
    ),
]
Database = Annotated[
    str, typer.Option(help="Database the run writes to (same server as BP_DB_URL); dropped and re-created.")
]
KeepDb = Annotated[
    bool,
    typer.Option(
        "--keep-db", help="Do not drop the bench database or empty Redis database 1 first (append)."
    ),
]
LogLevel = Annotated[str, typer.Option(help="Log level of the progress lines on stderr.")]

DEFAULT_OUT = Path("bench/results")
DEFAULT_DB = "bp_bench"


def _prepare(database: str, keep_db: bool, log_level: str, command: str) -> HarnessSettings:
    from barcode_harness.bench.env import BENCH_REDIS_DB, bench_settings

    setup_logging(log_level, f"bench-{command}")
    return bench_settings(load_harness_settings(), database, fresh=not keep_db, redis_db=BENCH_REDIS_DB)


def _run(
    command: str, run: Callable[[Any, Any], dict[str, Any]], spec: Any, opts: Opts, *, strict: bool = False
) -> tuple[dict[str, Any], Path]:
    """The flow every pipeline bench shares: settings, a fresh results folder, the run, its targets.
    ``strict``: a missed target is a failed command (exit 1; "not measured" is no failure)."""
    from barcode_harness.bench.env import BenchRun
    from barcode_harness.bench.report import new_results_dir

    settings = _prepare(opts.database, opts.keep_db, opts.log_level, command)
    folder = new_results_dir(opts.out, command)
    result = run(spec, BenchRun(settings, folder, start_stack=not opts.no_stack, fresh_db=not opts.keep_db))
    _print_targets(result, folder, command)
    if strict and any(t["met"] is False for t in result["targets"]):
        raise typer.Exit(1)
    return result, folder


@dataclasses.dataclass(frozen=True)
class Opts:
    """The options every pipeline bench takes (typer spells them out per command)."""

    out: Path
    no_stack: bool
    database: str
    keep_db: bool
    log_level: str


def _spec(base: Any, quick_preset: Any, quick: bool, **overrides: Any) -> Any:
    chosen = quick_preset if quick else base
    return dataclasses.replace(chosen, **{k: v for k, v in overrides.items() if v is not None})


def _print_targets(result: dict[str, Any], out: Path, command: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"bench {command}: targets (details in {out / (command + '.md')})")
    for col in ("target", "goal", "measured", "status"):
        table.add_column(col)
    for t in result.get("targets", []):
        status = "not measured" if t["met"] is None else ("[green]met[/]" if t["met"] else "[red]missed[/]")
        table.add_row(t["name"], t["goal"], t["measured"], status)
    console.print(table)
    typer.echo(f"results: {out}")


@bench_app.command("compare")
def compare_cmd(
    quick: Quick = False,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Scans/s per path [100].")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Requests in flight per path [10].")] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="Seconds per phase [60; quick 8].")] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Rounds (odd: legacy first, even: async first) [2].")
    ] = None,
    high_rate: Annotated[
        float | None, typer.Option(min=1, help="Rate of the high-load comparison [1000].")
    ] = None,
    high_duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds per path at the high rate; 0 skips [30; quick 6].")
    ] = None,
    sweep_delay: Annotated[
        list[int] | None,
        typer.Option(help="worker_max_delay_ms values to sweep (repeatable) [0 50 200 1000]."),
    ] = None,
    sweep_duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds per sweep setting; 0 skips [30; quick 5].")
    ] = None,
    sweep_rate: Annotated[float | None, typer.Option(min=0.1, help="Rate of the sweep [= --rate].")] = None,
    no_kafka_probe: Annotated[
        bool, typer.Option("--no-kafka-probe", help="Skip the bare Kafka produce.")
    ] = False,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    keep_db: KeepDb = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Legacy vs async under identical load: latency, DB writes per 1,000 scans, freshness, loss."""
    from barcode_harness.bench.compare import QUICK, CompareSpec, run_compare

    spec = _spec(
        CompareSpec(), QUICK, quick, rate=rate, concurrency=concurrency, duration_s=duration, rounds=rounds,
        high_rate=high_rate, high_duration_s=high_duration,
        sweep_delays_ms=tuple(sweep_delay) if sweep_delay else None, sweep_duration_s=sweep_duration,
        sweep_rate=sweep_rate, kafka_probe=False if no_kafka_probe else None,
    )  # fmt: skip
    _run("compare", run_compare, spec, Opts(out, no_stack, database, keep_db, log_level))


@bench_app.command("isolation")
def isolation_cmd(
    quick: Quick = False,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Scans/s on each path [100].")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Requests in flight per path [10].")] = None,
    baseline: Annotated[
        float | None, typer.Option(min=1, help="Seconds before contention [20; quick 5].")
    ] = None,
    contention: Annotated[
        float | None, typer.Option(min=1, help="Seconds of DB contention [40; quick 15].")
    ] = None,
    recovery: Annotated[
        float | None, typer.Option(min=1, help="Seconds after contention [40; quick 12].")
    ] = None,
    lockers: Annotated[int | None, typer.Option(min=1, help="Threads holding row locks [4].")] = None,
    hold: Annotated[
        float | None, typer.Option(min=0.01, help="Seconds each lock transaction holds [2].")
    ] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    keep_db: KeepDb = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Both paths under load while the DB is saturated with row locks: who stays flat, who drains after."""
    from barcode_harness.bench.isolation import QUICK, IsolationSpec, run_isolation

    spec = _spec(
        IsolationSpec(), QUICK, quick, rate=rate, concurrency=concurrency, baseline_s=baseline,
        contention_s=contention, recovery_s=recovery, lockers=lockers, hold_s=hold,
    )  # fmt: skip
    _run("isolation", run_isolation, spec, Opts(out, no_stack, database, keep_db, log_level))


@bench_app.command("max")
def max_cmd(
    quick: Quick = False,
    path: Annotated[
        list[str] | None,
        typer.Option(
            help="Paths to search (repeatable): legacy-single legacy-batch async-single async-batch."
        ),
    ] = None,
    step: Annotated[float | None, typer.Option(min=1, help="Seconds per rate step [15; quick 4].")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Scans per batch request [100].")] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(min=0, help="Sustained: errors below [0.001].")
    ] = None,
    max_p99: Annotated[
        float | None, typer.Option(min=1, help="Sustained: client p99 at most (ms) [250].")
    ] = None,
    insert_rows: Annotated[
        int | None, typer.Option(min=500, help="Rows for the bare INSERT ceiling.")
    ] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    keep_db: KeepDb = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Highest sustained rate per path and API, the stage that saturated first, and the raw ceilings."""
    from barcode_harness.bench.maxrate import QUICK, MaxSpec, run_max

    spec = _spec(
        MaxSpec(), QUICK, quick, paths=tuple(path) if path else None, step_s=step, batch_size=batch_size,
        max_error_rate=max_error_rate, max_p99_ms=max_p99, insert_rows=insert_rows,
    )  # fmt: skip
    _run("max", run_max, spec, Opts(out, no_stack, database, keep_db, log_level))


@bench_app.command("vegeta")
def vegeta_cmd(
    quick: Quick = False,
    rate: Annotated[
        list[float] | None,
        typer.Option(min=1, help="Request rates to run (repeatable) [100 1000 2000 3000]."),
    ] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="Seconds per rate [20; quick 5].")] = None,
    warmup: Annotated[
        float | None,
        typer.Option(min=0, help="Warm-up seconds at the highest rate, reported apart [60; quick 2]."),
    ] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    keep_db: KeepDb = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Single-scan ingest latency measured by vegeta, an independent open-loop load tool."""
    from barcode_harness.bench.vegeta import QUICK, VegetaSpec, run_vegeta

    spec = _spec(
        VegetaSpec(), QUICK, quick, rates=tuple(rate) if rate else None, duration_s=duration, warmup_s=warmup
    )
    result, _folder = _run("vegeta", run_vegeta, spec, Opts(out, no_stack, database, keep_db, log_level))
    for run in result["runs"]:
        typer.echo(
            f"{run['label']:>8}: p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
            f"success {run['success']:.4f}, lost {run['lost']}"
        )


@bench_app.command("replication")
def replication_cmd(
    quick: Quick = False,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Single scans/s of the latency phase [200].")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Seconds of the latency phase [30; quick 8].")
    ] = None,
    step: Annotated[
        float | None, typer.Option(min=1, help="Seconds per maximum-rate step [10; quick 4].")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Rounds, each measuring both profiles [2; quick 1].")
    ] = None,
    ha_state_dir: Annotated[
        Path | None, typer.Option(help="State directory of the ha stack [<BP_STATE_DIR>-ha].")
    ] = None,
    doc: Annotated[Path, typer.Option(help="Markdown file whose replication section is rewritten.")] = Path(
        "docs/benchmarks.md"
    ),
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    log_level: LogLevel = "INFO",
) -> None:
    """Cost of replication: Kafka produce and ingest latency, end-to-end maximum rate, single vs ha."""
    from barcode_harness.bench.replication import QUICK, ReplicationSpec, run_replication, write_section
    from barcode_harness.bench.report import new_results_dir

    setup_logging(log_level, "bench-replication")
    spec = _spec(ReplicationSpec(), QUICK, quick, rate=rate, duration_s=duration, step_s=step, rounds=rounds)
    folder = new_results_dir(out, "replication")
    result = run_replication(load_harness_settings(), spec, folder, database=database, ha_dir=ha_state_dir,
                             start_stack=not no_stack)  # fmt: skip
    for p in result["profiles"]:
        lat = p["ingest_latency"]["latency_ms"]
        kafka = p["kafka_produce"]["latency_ms"]
        typer.echo(f"{p['profile']:>6}: Kafka produce p50 {kafka['p50_ms']:.2f} ms, "
                   f"ingest p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms, "
                   f"max {p['max_sustained_scans_per_s']:,.0f} scans/s end to end")  # fmt: skip
    typer.echo(f"section written to {write_section(doc, (folder / 'replication.md').read_text())}")
    typer.echo(f"results: {folder}")


@bench_app.command("fill")
def fill_cmd(
    rows: Annotated[int, typer.Option(min=1, help="Rows to add to barcodes.")],
    days: Annotated[
        float, typer.Option(min=0.01, help="Scan times spread over the last this many days.")
    ] = 30,
    database: Database = DEFAULT_DB,
    log_level: LogLevel = "INFO",
) -> None:
    """Rows straight into barcodes of the bench database (outside the pipeline), for `bench max --keep-db`
    on a filled table. Appends; creates and migrates the database if needed."""
    from barcode_harness.bench.fill import fill
    from barcode_pipeline.db import migrate

    setup_logging(log_level, "bench-fill")
    url = migrate.database_url(load_harness_settings().db.url, database)
    migrate.create_database(url)
    migrate.upgrade(url)
    done = fill(url, rows, days=days)
    typer.echo(
        f"{done['rows']:,} rows in {done['seconds']:.1f} s ({done['rows_per_s']:,.0f} rows/s) into {database}"
    )


@bench_app.command("table-size")
def table_size_cmd(
    quick: Quick = False,
    rows: Annotated[
        int | None, typer.Option(min=1, help="Rows the fill puts in barcodes [50,000,000].")
    ] = None,
    days: Annotated[
        float | None, typer.Option(min=0.01, help="Their scan times over the last this many days [30].")
    ] = None,
    doc: Annotated[Path, typer.Option(help="Markdown file whose table-size section is rewritten.")] = Path(
        "docs/benchmarks.md"
    ),
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    log_level: LogLevel = "INFO",
) -> None:
    """The batch API's maximum on the empty table, then on one filled with tens of millions of rows."""
    from barcode_harness.bench.tablesize import QUICK, TableSizeSpec, run_table_size, write_section

    spec = _spec(TableSizeSpec(), QUICK, quick, rows=rows, days=days)
    _result, folder = _run(
        "table-size", run_table_size, spec, Opts(out, no_stack, database, False, log_level)
    )
    typer.echo(f"section written to {write_section(doc, (folder / 'table-size.md').read_text())}")


@bench_app.command("footprint")
def footprint_cmd(
    quick: Quick = False,
    scans: Annotated[
        int | None, typer.Option(min=1000, help="Scans through the publish path [200,000].")
    ] = None,
    rate: Annotated[
        list[float] | None,
        typer.Option(min=1, help="Scans/s whose scan times the markers see; repeatable [100, 1,000, 5,000]."),
    ] = None,
    table_rows: Annotated[
        int | None,
        typer.Option(min=1000, help="Rows of the table measurement and migration timing [1,000,000]."),
    ] = None,
    doc: Annotated[Path, typer.Option(help="Markdown file whose footprint section is rewritten.")] = Path(
        "docs/capacity.md"
    ),
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Bytes per scan of every Redis structure (markers, stream entries, AOF, DLQ), of Kafka and of the
    table; the time the partitioning migration takes per million rows."""
    from barcode_harness.bench.footprint import QUICK, FootprintSpec, run_footprint, write_section
    from barcode_harness.bench.report import new_results_dir

    setup_logging(log_level, "bench-footprint")
    spec = _spec(FootprintSpec(), QUICK, quick, scans=scans, rates=tuple(rate) if rate else None,
                 table_rows=table_rows)  # fmt: skip
    folder = new_results_dir(out, "footprint")
    result = run_footprint(load_harness_settings(), spec, folder, start_stack=not no_stack)
    markdown = result.pop("markdown")
    (folder / "footprint.json").write_text(json.dumps(result, indent=2))
    (folder / "footprint.md").write_text(markdown)
    typer.echo(markdown)
    typer.echo(f"section written to {write_section(doc, markdown)}; results: {folder}")


@bench_app.command("soak")
def soak_cmd(
    quick: Quick = False,
    rate: Annotated[float | None, typer.Option(min=1, help="Scans/s, all APIs together [1000].")] = None,
    duration: Annotated[float | None, typer.Option(min=10, help="Seconds of load [3600; quick 40].")] = None,
    warmup: Annotated[
        float | None, typer.Option(min=0, help="Seconds before the slopes are fitted [300; quick 8].")
    ] = None,
    sample: Annotated[
        float | None, typer.Option(min=1, help="Seconds between samples [30; quick 4].")
    ] = None,
    doc: Annotated[Path | None, typer.Option(help="Markdown file whose soak section is rewritten.")] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    log_level: LogLevel = "INFO",
) -> None:
    """A steady load for as long as asked: every store's slope and bytes per scan, the time until each
    reaches its bound; fails on growing memory or descriptors, a tail that doubles, or a lost scan."""
    from barcode_harness.bench.soak import QUICK, SoakSpec, run_soak, write_section

    spec = _spec(SoakSpec(), QUICK, quick, rate=rate, duration_s=duration, warmup_s=warmup, sample_s=sample)
    if spec.warmup_s >= spec.duration_s:
        raise typer.BadParameter("must be shorter than --duration", param_hint="--warmup")
    result, folder = _run("soak", run_soak, spec, Opts(out, no_stack, database, False, log_level))
    if doc is not None:
        typer.echo(f"section written to {write_section(doc, (folder / 'soak.md').read_text())}")
        (doc.parent / "img").mkdir(parents=True, exist_ok=True)  # the section shows img/soak.png
        shutil.copyfile(folder / "soak.png", doc.parent / "img" / "soak.png")
    if any(t["met"] is False for t in result["targets"]):  # the section is written first, then exit 1
        raise typer.Exit(1)


@bench_app.command("plan")
def plan_cmd(
    doc: Annotated[Path, typer.Option(help="Markdown file whose plan section is rewritten.")] = Path(
        "docs/capacity.md"
    ),
) -> None:
    """Write the capacity plan at 100, 1,000 and 5,000 scans/s into the docs (`capacity` at each rate)."""
    from barcode_harness.bench.capacityplan import write_section

    setup_logging("INFO", "bench-plan")
    typer.echo(f"section written to {write_section(doc, load_harness_settings())}")


@bench_app.command("hostile")
def hostile_cmd(
    quick: Quick = False,
    rate: Annotated[float | None, typer.Option(min=1, help="Keyed scans/s [500].")] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="Seconds per phase [30; quick 8].")] = None,
    slow: Annotated[
        int | None, typer.Option(min=0, help="Connections that never finish their headers [2000; quick 300].")
    ] = None,
    invalid_rate: Annotated[
        float | None, typer.Option(min=1, help="Requests/s with random invalid keys [1000; quick 200].")
    ] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    database: Database = DEFAULT_DB,
    log_level: LogLevel = "INFO",
) -> None:
    """Keyed scanners alone, then while keyless clients hold slow connections, stream huge headers and
    send invalid keys: every keyed scan answered, p99 at most 3x, ingest memory bounded, no restart."""
    from barcode_harness.bench.hostile import QUICK, HostileSpec, run_hostile

    spec = _spec(HostileSpec(), QUICK, quick, rate=rate, duration_s=duration, slow_connections=slow,
                 invalid_key_rate=invalid_rate)  # fmt: skip
    _run("hostile", run_hostile, spec, Opts(out, no_stack, database, False, log_level), strict=True)


@bench_app.command("docs")
def docs_cmd(
    results: Annotated[
        Path, typer.Option(help="Where the bench commands wrote their folders.")
    ] = DEFAULT_OUT,
    doc: Annotated[Path, typer.Option(help="Markdown file to (re)write.")] = Path("docs/benchmarks.md"),
    images: Annotated[Path, typer.Option(help="Folder the charts are copied to.")] = Path("docs/img/bench"),
) -> None:
    """Rebuild docs/benchmarks.md from the latest result of each bench command (copies the charts)."""
    from barcode_harness.bench.docs import build_docs

    setup_logging("INFO", "bench-docs")
    used = build_docs(results, doc, images)
    for command, folder in used.items():
        typer.echo(f"{command}: {folder}")
    typer.echo(f"wrote {doc}")


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""
    app.add_typer(bench_app, name="bench")


@bench_app.command("auth")
def auth_cmd(
    quick: Quick = False,
    rate: Annotated[float | None, typer.Option(min=1, help="Requests/s [500].")] = None,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Seconds per round and mode [10; quick 4].")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Rounds, each with auth off and on [3; quick 2].")
    ] = None,
    out: Out = DEFAULT_OUT,
    no_stack: NoStack = False,
    log_level: LogLevel = "INFO",
) -> None:
    """Scanner authentication's cost: the same load against ingest with auth off and on, alternately."""
    import time

    from barcode_harness.bench.auth_overhead import AuthBenchSpec, run_auth_bench

    setup_logging(log_level, "bench-auth")
    spec = _spec(AuthBenchSpec(), AuthBenchSpec(duration_s=4, rounds=2), quick,
                 rate=rate, duration_s=duration, rounds=rounds)  # fmt: skip
    folder = out / time.strftime("%Y%m%d-%H%M%S")
    result = run_auth_bench(load_harness_settings(), spec, folder, start_stack=not no_stack)
    (folder / "auth.json").write_text(json.dumps(result, indent=2))
    med = result["median_p50_ms"]
    micro = result["in_process_auth_cost"]
    typer.echo(
        f"bench auth ({spec.rate:g} req/s, {spec.rounds} rounds x {spec.duration_s:g} s per mode, "
        "shared machine):\n"
        f"  p50 auth off {med['off']:.3f} ms, auth required {med['required']:.3f} ms: "
        f"added {result['added_p50_ms']:+.3f} ms (target <= 0.05 ms)\n"
        f"  the checks alone, in process: {micro['key_us']:.2f} us per request with a key, "
        f"{micro['trusted_network_us']:.2f} us from a trusted network\n"
        f"results: {folder / 'auth.json'}"
    )
