"""``barcode-pipeline bench ...``: one command per benchmark, each declared once as a :class:`Command`
(its spec's option fields become its options). The modules that run benchmarks are imported only
when their command runs, so the CLI starts fast."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import shutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from barcode_harness.bench import specs
from barcode_harness.settings import load_harness_settings
from barcode_pipeline.logs import setup_logging

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: legacy vs async, DB-contention isolation, maximum sustained rates. "
    "Results go to bench/results/<timestamp>/ (JSON, Markdown, PNG).",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_OUT = Path("bench/results")
DEFAULT_DB = "bp_bench"


@dataclasses.dataclass(frozen=True)
class Opts:
    """The options the pipeline benches share (each command takes those it lists in ``common``)."""

    out: Path = DEFAULT_OUT
    no_stack: bool = False
    database: str = DEFAULT_DB
    keep_db: bool = False
    log_level: str = "INFO"


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


COMMON = {
    "out": _param("out", Annotated[Path, typer.Option(
        "--out", help="Base folder; a <timestamp>/ folder is created in it.")], DEFAULT_OUT),
    "no_stack": _param("no_stack", Annotated[bool, typer.Option(
        "--no-stack", help="Use running Kafka/Redis/MariaDB (connection settings from env).")], False),
    "database": _param("database", Annotated[str, typer.Option(
        help="Database the run writes to (same server as BP_DB_URL); dropped and re-created.")], DEFAULT_DB),
    "keep_db": _param("keep_db", Annotated[bool, typer.Option(
        "--keep-db", help="Keep the bench database and Redis database 1 as they are (append).")], False),
    "log_level": _param("log_level", Annotated[str, typer.Option(
        help="Log level of the progress lines on stderr.")], "INFO"),
}  # fmt: skip
PIPELINE = ("out", "no_stack", "database", "keep_db", "log_level")
QUICK = _param("quick", Annotated[bool, typer.Option(
    "--quick", help="Short preset (seconds per phase), for a first look.")], False)  # fmt: skip


def doc_option(default: Path | None, what: str) -> inspect.Parameter:
    """``--doc``: the Markdown file whose section the command rewrites."""
    info = typer.Option(help=f"Markdown file whose {what} section is rewritten.")
    return _param("doc", Annotated[Path | None if default is None else Path, info], default)


Body = Callable[["Command", Any, Opts, dict[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Command:
    """One bench command: its spec and quick preset, what runs it, the options that are not the
    spec's (``extra``) and which shared ones it takes (``common``)."""

    name: str
    doc: str
    spec: specs.Spec
    quick: specs.Spec
    body: Body
    extra: tuple[inspect.Parameter, ...] = ()
    common: tuple[str, ...] = PIPELINE


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:,g}" if value < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def spec_options(spec: specs.Spec, quick: specs.Spec) -> Iterator[tuple[str, inspect.Parameter]]:
    """(field, parameter) for each option field of ``spec``; the help ends with the full run's value
    and, where it differs, the quick preset's."""
    hints = typing.get_type_hints(type(spec))
    for field in dataclasses.fields(spec):
        option: specs.Option | None = field.metadata.get("option")
        if option is None:
            continue
        full, short = getattr(spec, field.name), getattr(quick, field.name)
        flag = option.flag or field.name.removesuffix("_s").removesuffix("_ms").replace("_", "-")
        if hints[field.name] is bool:  # on by default: the option turns it off
            off = typer.Option(f"--no-{flag}", help=f"{option.help}.")
            yield field.name, _param(field.name, Annotated[bool, off], False)
            continue
        values = _show(full) + ("" if short == full else f"; quick {_show(short)}")
        shown = values if option.shown is None else option.shown
        kind = (typing.get_args(hints[field.name]) or (hints[field.name],))[0]  # float of tuple/Optional
        annotation = list[kind] | None if isinstance(full, tuple) else kind | None  # type: ignore[valid-type]
        repeat = " (repeatable)" if isinstance(full, tuple) else ""
        info = typer.Option(
            f"--{flag}", min=option.min, help=f"{option.help}{repeat}{f' [{shown}]' if shown else ''}."
        )
        yield field.name, _param(field.name, Annotated[annotation, info], None)


def register_command(cmd: Command) -> None:
    """Add ``cmd`` to ``bench`` with a signature built from its declaration (typer reads it)."""
    fields = dict(spec_options(cmd.spec, cmd.quick))
    params = [QUICK, *fields.values(), *cmd.extra, *(COMMON[name] for name in cmd.common)]

    def command(**given: Any) -> None:
        quick = given.pop("quick")
        chosen = cmd.quick if quick else cmd.spec
        overrides = {name: _from_option(getattr(chosen, name), given.pop(name)) for name in fields}
        spec = dataclasses.replace(chosen, **{k: v for k, v in overrides.items() if v is not None})
        opts = Opts(**{name: given.pop(name) for name in cmd.common})
        cmd.body(cmd, spec, opts, given)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = cmd.doc
    command.__name__ = f"{cmd.name.replace('-', '_')}_cmd"
    bench_app.command(cmd.name)(command)


def _from_option(current: Any, given: Any) -> Any:
    """An option's value as its field takes it: a list as a tuple, ``--no-x`` as False; None: unset."""
    if isinstance(current, bool):
        return False if given else None
    if isinstance(given, list):
        return tuple(given) or None
    return given


def _start(cmd: Command, opts: Opts) -> Path:
    """What every bench does first: its log lines, then a fresh results folder."""
    from barcode_harness.bench.report import new_results_dir

    setup_logging(opts.log_level, f"bench-{cmd.name}")
    return new_results_dir(opts.out, cmd.name)


def _run(cmd: Command, run_path: str, spec: Any, opts: Opts) -> tuple[dict[str, Any], Path]:
    """The flow every pipeline bench shares: settings, a fresh results folder, the run, its targets."""
    from barcode_harness.bench.env import BENCH_REDIS_DB, BenchRun, bench_settings

    folder = _start(cmd, opts)
    settings = bench_settings(load_harness_settings(), opts.database, fresh=not opts.keep_db,
                              redis_db=BENCH_REDIS_DB)  # fmt: skip
    result = _load(run_path)(spec, BenchRun(settings, folder, start_stack=not opts.no_stack,
                                            fresh_db=not opts.keep_db))  # fmt: skip
    _print_targets(result, folder, cmd.name)
    return result, folder


def _exit_on_a_miss(result: dict[str, Any]) -> None:
    """A strict command fails (exit 1) on a missed target; "not measured" is no failure."""
    if any(t["met"] is False for t in result["targets"]):
        raise typer.Exit(1)


def _load(path: str) -> Any:
    """``module:attribute`` of the bench package, imported now (the CLI starts without them)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(f"barcode_harness.bench.{module}"), attribute)


def runs(
    run_path: str,
    *,
    strict: bool = False,
    then: Callable[[dict[str, Any], Path, dict[str, Any]], None] | None = None,
) -> Body:
    """The body of a pipeline bench: :func:`_run`, then ``then(result, folder, extra options)``;
    ``strict``: then a missed target fails the command (what ``then`` writes is written first)."""

    def body(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
        result, folder = _run(cmd, run_path, spec, opts)
        if then is not None:
            then(result, folder, extra)
        if strict:
            _exit_on_a_miss(result)

    return body


def _print_targets(result: dict[str, Any], out: Path, command: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "goal", "measured", "status",
                  title=f"bench {command}: targets (details in {out / (command + '.md')})")  # fmt: skip
    status = {None: "not measured", True: "[green]met[/]", False: "[red]missed[/]"}
    for t in result.get("targets", []):
        table.add_row(t["name"], t["goal"], t["measured"], status[t["met"]])
    Console().print(table)
    typer.echo(f"results: {out}")


def _section(module: str, name: str) -> Callable[[dict[str, Any], Path, dict[str, Any]], None]:
    """Rewrite the command's section of ``--doc`` from its Markdown result."""

    def write(result: dict[str, Any], folder: Path, extra: dict[str, Any]) -> None:
        written = _load(f"{module}:write_section")(extra["doc"], (folder / f"{name}.md").read_text())
        typer.echo(f"section written to {written}")

    return write


def _vegeta_lines(result: dict[str, Any], folder: Path, extra: dict[str, Any]) -> None:
    for run in result["runs"]:
        typer.echo(f"{run['label']:>8}: p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
                   f"success {run['success']:.4f}, lost {run['lost']}")  # fmt: skip


def _soak(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
    if spec.warmup_s >= spec.duration_s:
        raise typer.BadParameter("must be shorter than --duration", param_hint="--warmup")
    result, folder = _run(cmd, "soak:run_soak", spec, opts)
    if (doc := extra["doc"]) is not None:
        _section("soak", "soak")(result, folder, extra)
        (doc.parent / "img").mkdir(parents=True, exist_ok=True)  # the section shows img/soak.png
        shutil.copyfile(folder / "soak.png", doc.parent / "img" / "soak.png")
    _exit_on_a_miss(result)  # the section is written first


def _replication(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
    from barcode_harness.bench.replication import run_replication, write_section

    folder = _start(cmd, opts)
    result = run_replication(load_harness_settings(), spec, folder, database=opts.database,
                             ha_dir=extra["ha_state_dir"], start_stack=not opts.no_stack)  # fmt: skip
    for p in result["profiles"]:
        lat = p["ingest_latency"]["latency_ms"]
        kafka = p["kafka_produce"]["latency_ms"]
        typer.echo(f"{p['profile']:>6}: Kafka produce p50 {kafka['p50_ms']:.2f} ms, "
                   f"ingest p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms, "
                   f"max {p['max_sustained_scans_per_s']:,.0f} scans/s end to end")  # fmt: skip
    typer.echo(f"section written to {write_section(extra['doc'], (folder / 'replication.md').read_text())}")
    typer.echo(f"results: {folder}")


def _footprint(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
    from barcode_harness.bench.footprint import run_footprint, write_section
    from barcode_harness.bench.report import write_json

    folder = _start(cmd, opts)
    result = run_footprint(load_harness_settings(), spec, folder, start_stack=not opts.no_stack)
    markdown = result.pop("markdown")
    write_json(folder / "footprint.json", result)
    (folder / "footprint.md").write_text(markdown)
    typer.echo(markdown)
    typer.echo(f"section written to {write_section(extra['doc'], markdown)}; results: {folder}")


def _auth(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
    from barcode_harness.bench.auth_overhead import run_auth_bench
    from barcode_harness.bench.report import write_json

    folder = _start(cmd, opts)
    result = run_auth_bench(load_harness_settings(), spec, folder, start_stack=not opts.no_stack)
    write_json(folder / "auth.json", result)
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


def _linger(cmd: Command, spec: Any, opts: Opts, extra: dict[str, Any]) -> None:
    from barcode_harness.bench.lingercost import run_linger

    folder = _start(cmd, opts)
    result = run_linger(load_harness_settings(), spec, folder, start_stack=not opts.no_stack)
    for c in result["cells"]:
        typer.echo(f"{c['layout']:>40}, linger {c['linger_ms']:>4g} ms: {c['scans_per_request']} scans a "
                   f"request, broker {c['broker_us_per_scan']} us a scan, p50 {c['p50_ms']} ms")  # fmt: skip
    _section("lingercost", "linger")(result, folder, extra)
    typer.echo(f"results: {folder}")


HA_STATE_DIR = _param("ha_state_dir", Annotated[Path | None, typer.Option(
    help="State directory of the ha stack [<BP_STATE_DIR>-ha].")], None)  # fmt: skip
BENCHMARKS, CAPACITY = Path("docs/benchmarks.md"), Path("docs/capacity.md")
NO_KEEP = ("out", "no_stack", "database", "log_level")  # the pipeline benches without --keep-db
COMMANDS = (
    Command("compare", "Legacy vs async under identical load: latency, DB writes per 1,000 scans, freshness, "
            "loss.", specs.CompareSpec(), specs.COMPARE_QUICK, runs("compare:run_compare")),
    Command("isolation", "Both paths under load while the DB is saturated with row locks: who stays flat, "
            "who drains after.", specs.IsolationSpec(), specs.ISOLATION_QUICK,
            runs("isolation:run_isolation")),
    Command("max", "Highest sustained rate per path and API, the stage that saturated first, and the raw "
            "ceilings.", specs.MaxSpec(), specs.MAX_QUICK, runs("maxrate:run_max")),
    Command("vegeta", "Single-scan ingest latency measured by vegeta, an independent open-loop load tool.",
            specs.VegetaSpec(), specs.VEGETA_QUICK, runs("vegeta:run_vegeta", then=_vegeta_lines)),
    Command("replication", "Cost of replication: Kafka produce and ingest latency, end-to-end maximum rate, "
            "single vs ha.", specs.ReplicationSpec(), specs.REPLICATION_QUICK, _replication,
            extra=(HA_STATE_DIR, doc_option(BENCHMARKS, "replication")), common=NO_KEEP),
    Command("table-size", "The batch API's maximum on the empty table, then on one filled with tens of "
            "millions of rows.", specs.TableSizeSpec(), specs.TABLE_SIZE_QUICK,
            runs("tablesize:run_table_size", then=_section("tablesize", "table-size")),
            extra=(doc_option(BENCHMARKS, "table-size"),), common=NO_KEEP),
    Command("footprint", "Bytes per scan of every Redis structure (markers, stream entries, AOF, DLQ), of "
            "Kafka and of the table; the time the partitioning migration takes per million rows.",
            specs.FootprintSpec(), specs.FOOTPRINT_QUICK, _footprint,
            extra=(doc_option(CAPACITY, "footprint"),), common=("out", "no_stack", "log_level")),
    Command("soak", "A steady load for as long as asked: every store's slope and bytes per scan, the time "
            "until each reaches its bound; fails on growing memory or descriptors, a tail that doubles, or a "
            "lost scan.", specs.SoakSpec(), specs.SOAK_QUICK, _soak, extra=(doc_option(None, "soak"),),
            common=NO_KEEP),
    Command("hostile", "Keyed scanners alone, then while keyless clients hold slow connections, stream huge "
            "headers and send invalid keys: every keyed scan answered, p99 at most 3x, ingest memory "
            "bounded, no restart.", specs.HostileSpec(), specs.HOSTILE_QUICK,
            runs("hostile:run_hostile", strict=True), common=NO_KEEP),
    Command("auth", "Scanner authentication's cost: the same load against ingest with auth off and on, "
            "alternately.", specs.AuthBenchSpec(), specs.AUTH_QUICK, _auth,
            common=("out", "no_stack", "log_level")),
    Command("linger", "The broker's CPU per scan and scans per produce request for each producer linger, "
            "keyed by device over the topic's partitions and on one partition: what batching would save.",
            specs.LingerSpec(), specs.LINGER_QUICK, _linger, extra=(doc_option(BENCHMARKS, "linger"),),
            common=("out", "no_stack", "log_level")),
)  # fmt: skip
for _cmd in COMMANDS:
    register_command(_cmd)


@bench_app.command("fill")
def fill_cmd(
    rows: Annotated[int, typer.Option(min=1, help="Rows to add to barcodes.")],
    days: Annotated[
        float, typer.Option(min=0.01, help="Scan times spread over the last this many days.")
    ] = 30,
    database: Annotated[str, typer.Option(help="Database the rows go to.")] = DEFAULT_DB,
    log_level: Annotated[str, typer.Option(help="Log level of the progress lines on stderr.")] = "INFO",
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


@bench_app.command("plan")
def plan_cmd(
    doc: Annotated[Path, typer.Option(help="Markdown file whose plan section is rewritten.")] = CAPACITY,
) -> None:
    """Write the capacity plan at 100, 1,000 and 5,000 scans/s into the docs (`capacity` at each rate)."""
    from barcode_harness.bench.capacityplan import write_section

    setup_logging("INFO", "bench-plan")
    typer.echo(f"section written to {write_section(doc, load_harness_settings())}")


@bench_app.command("docs")
def docs_cmd(
    results: Annotated[
        Path, typer.Option(help="Where the bench commands wrote their folders.")
    ] = DEFAULT_OUT,
    doc: Annotated[Path, typer.Option(help="Markdown file to (re)write.")] = BENCHMARKS,
    images: Annotated[Path, typer.Option(help="Folder the charts are copied to.")] = Path("docs/img/bench"),
) -> None:
    """Rebuild docs/benchmarks.md from the latest result of each bench command (copies the charts)."""
    from barcode_harness.bench.docs import build_docs

    setup_logging("INFO", "bench-docs")
    for command, folder in build_docs(results, doc, images).items():
        typer.echo(f"{command}: {folder}")
    typer.echo(f"wrote {doc}")


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""
    app.add_typer(bench_app, name="bench")
