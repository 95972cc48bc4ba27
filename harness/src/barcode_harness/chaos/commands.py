"""``barcode-pipeline chaos <scenario>|all``: fault injection with the exactly-once checks."""

from __future__ import annotations

import shlex
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from barcode_harness.settings import HarnessSettings, load_harness_settings
from barcode_pipeline.logs import setup_logging

if TYPE_CHECKING:
    from barcode_harness.chaos.checks import Check
    from barcode_harness.chaos.context import ChaosParams
    from barcode_harness.chaos.harness import ScenarioResult
    from barcode_harness.chaos.schedule import ScheduleSpec

WAIT_OFF = ("ha-redis-primary-kill", "ha-redis-split-brain")  # the ha faults that --wait-off reruns

HELP = """Inject faults under steady load and check that no acknowledged scan is lost or stored twice.

Runs the whole pipeline (ingest, processor, 2 workers) with simulated scanners sending --rate
scans/s through a durable outbox (they resend until they get a 2xx), injects a fault, keeps it for
--hold seconds, heals it, waits until the clients and the pipeline have drained, then checks every
acknowledged scan against the database and the dead-letter stores. Exits 1 if any check fails.

`chaos all` runs every scenario and writes docs/reliability.md (or --report PATH).

`chaos nemesis --seed N --duration S --iterations K` runs K random schedules (seeds N, N+1, ...)
of overlapping kills, pauses and restarts of the processor, each worker, Redis, Kafka and
MariaDB, each printed before it runs, and writes the nemesis section of docs/reliability.md.

WARNING: this SIGKILLs and restarts the Kafka, Redis and MariaDB of the stack the BP_* settings
point at, flushes Redis and rewinds the processor's consumer group. Run it on a disposable stack,
e.g. BP_STATE_DIR=/tmp/bp-chaos with its own ports (BP_KAFKA_BOOTSTRAP, BP_KAFKA_CONTROLLER_PORT,
BP_REDIS_URL, BP_DB_URL, BP_INGEST_PORT).
"""


def chaos(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(metavar="SCENARIO...", help="Scenario names or numbers (see --list), or `all`."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios and exit.")] = False,
    rate: Annotated[float, typer.Option(min=1, help="Client scans per second during each scenario.")] = 200.0,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of steady load before the fault.")] = 5.0,
    hold: Annotated[float, typer.Option(min=0, help="Seconds the fault is kept before it is healed.")] = 20.0,
    drain_timeout: Annotated[
        float, typer.Option(min=10, help="Give up (fail) if not drained this long after the heal.")
    ] = 120.0,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the results as Markdown here (default for `all`: docs/reliability.md)."),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Do not write a report.")] = False,
    workdir: Annotated[
        Path | None, typer.Option(help="Outboxes and the pipeline log (default: <state dir>/chaos/<time>).")
    ] = None,
    seed: Annotated[int, typer.Option(help="nemesis: seed of the first schedule.")] = 1,
    duration: Annotated[float, typer.Option(min=5, help="nemesis: seconds one schedule spans.")] = 40.0,
    iterations: Annotated[
        int, typer.Option(min=1, help="nemesis: schedules to run (seed, seed+1, ...).")
    ] = 1,
    mean_gap: Annotated[
        float, typer.Option(min=0.5, help="nemesis: mean seconds between fault starts.")
    ] = 3.0,
    fill: Annotated[
        list[str] | None,
        typer.Option(
            help="nemesis: also fill (repeatable): redis (maxmemory), disk (a ballast file on the servers' "
            "disk: BP_STATE_DIR must be its own mount, --workdir on another)."
        ),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(help="single, or ha: the replicated stack's scenarios (chaos/ha_scenarios.py)."),
    ] = "single",
    wait_off: Annotated[
        bool,
        typer.Option(
            "--wait-off",
            help="ha: also run the Redis primary kill and the split brain with "
            "BP_REDIS_MIN_REPLICAS=0, as evidence of what WAIT protects.",
        ),
    ] = False,
) -> None:
    """Inject faults under load; check every acknowledged scan is stored exactly once (or dead-lettered)."""
    from barcode_harness import sections
    from barcode_harness.chaos import ha_scenarios
    from barcode_harness.chaos import report as doc
    from barcode_harness.chaos.context import ChaosParams
    from barcode_harness.chaos.harness import run_scenarios
    from barcode_harness.chaos.scenarios import select
    from barcode_harness.stack.ha_nodes import client_settings
    from barcode_pipeline.errors import ConfigError

    ha = profile == "ha"
    if list_:
        for s in (ha_scenarios.select if ha else select)(["all"]):
            typer.echo(f"{s.key:>3}  {s.name:<28} {s.title}")
        return
    if not scenarios:
        see = "--profile ha --list`) or `all`" if ha else "--list`), `all` or `nemesis`"
        raise ConfigError(f"name a scenario (see `barcode-pipeline chaos {see}")
    if ha:
        chosen = ha_scenarios.select(scenarios)
    elif "nemesis" in scenarios and len(scenarios) > 1:
        raise ConfigError("`nemesis` runs on its own: `barcode-pipeline chaos nemesis --seed N`")
    else:
        chosen = [] if scenarios == ["nemesis"] else select(scenarios)
    settings = client_settings(load_harness_settings(stack_profile="ha")) if ha else load_harness_settings()
    setup_logging(settings.log_level, "chaos")
    params = ChaosParams(rate=rate, warmup_s=warmup, hold_s=hold, drain_timeout_s=drain_timeout)
    work = workdir or settings.state_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    default = Path("docs/reliability.md") if not chosen or "all" in scenarios else None
    report = None if no_report else report or default
    if not chosen:
        spec = _schedule_spec(settings, work, duration=duration, mean_gap=mean_gap, fills=tuple(fill or ()))
        _nemesis(settings, params, work, seed=seed, spec=spec, iterations=iterations, report=report)
        return
    typer.echo(f"chaos{' (ha)' if ha else ''}: {len(chosen)} scenario(s) at {rate:g} scans/s, hold "
               f"{hold:g} s; log: {work / 'pipeline.log'}")  # fmt: skip
    show = partial(_show_scenario, ha=ha)
    started = time.monotonic()
    results = run_scenarios(settings, chosen, params, work, on_result=show)
    runs = [("WAIT on (the default)", results)]
    if ha and wait_off:
        typer.echo("chaos (ha): the same Redis faults with WAIT off (evidence, not a pass condition)")
        off, evidence = settings.updated({"redis_min_replicas": 0}), ha_scenarios.select(list(WAIT_OFF))
        runs.append(("WAIT off (BP_REDIS_MIN_REPLICAS=0): evidence only",
                     run_scenarios(off, evidence, params, work / "wait-off", on_result=show)))  # fmt: skip
    if report is not None:
        knobs = (doc.ha_settings_info if ha else doc.settings_info)(settings)
        info = doc.RunInfo(_command(), params, settings=knobs, machine=doc.machine_info(),
                       duration_s=time.monotonic() - started)  # fmt: skip
        if ha:
            written = sections.write(report, doc.render_ha_section(runs, info), sections.HA)
            typer.echo(f"report section written to {written}")
        else:
            typer.echo(f"report written to {doc.write_report(report, results, info)}")
    failed = [r.name for r in results if not r.ok]
    _exit(failed, f"{len(failed)} scenario(s) failed: {', '.join(failed)}")


def _show(ok: bool, line: str, failures: list[Check]) -> None:
    """One result on the console: its verdict, one line of numbers, then each failed check."""
    verdict = typer.style("PASS", fg="green") if ok else typer.style("FAIL", fg="red", bold=True)
    typer.echo(f"{verdict} {line}")
    for failed in failures:
        typer.echo(f"      failed: {failed.name}: {failed.detail}")


def _show_scenario(r: ScenarioResult, *, ha: bool) -> None:
    drain = "-" if r.drain_s is None else f"{r.drain_s:.1f}s"
    line = f"{r.key:>3} {r.name:<28} ack {r.acknowledged:>6} stored {r.stored:>6} "
    if ha:
        line += (f"lost {r.lost} dup {r.duplicates} failover {r.metrics.get('failover_s', '-')} s "
                 f"drain {drain} rewound {r.metrics.get('rewound', 0)}")  # fmt: skip
    else:
        line += f"dead {r.dead_lettered:>3} lost {r.lost} dup {r.duplicates} drain {drain}"
        line += f" takeover {r.takeover_s:.2f}s" if r.takeover_s is not None else ""
    _show(r.ok, line, r.failures)


def _command() -> str:
    """The command line as run, for the report's "reproduce" part."""
    return ("barcode-pipeline chaos " + " ".join(shlex.quote(a) for a in sys.argv[2:])).strip()


def _exit(failed: list[str], message: str) -> NoReturn:
    if failed:
        typer.echo(message, err=True)
    raise typer.Exit(1 if failed else 0)


def _schedule_spec(
    settings: HarnessSettings, work: Path, *, duration: float, mean_gap: float, fills: tuple[str, ...]
) -> ScheduleSpec:
    """The nemesis's schedule shape; a disk fault only where it cannot starve the machine or the clients."""
    from barcode_harness.chaos.faults import own_filesystem
    from barcode_harness.chaos.schedule import DISK, FILLABLE, ScheduleSpec
    from barcode_pipeline.errors import ConfigError

    if unknown := sorted(set(fills) - set(FILLABLE)):
        raise ConfigError(f"--fill takes {' or '.join(FILLABLE)}, not {', '.join(unknown)}")
    if DISK in fills:
        state = settings.state_dir.resolve()
        if not state.exists() or not own_filesystem(state):
            raise ConfigError(
                f"--fill disk needs BP_STATE_DIR ({state}) on its own mount (a loop device or tmpfs)"
            )
        near = next(p for p in (work.resolve(), *work.resolve().parents) if p.exists())
        if near.stat().st_dev == state.stat().st_dev:
            raise ConfigError(
                "--fill disk needs --workdir on another filesystem: the clients' outboxes live there"
            )
    return ScheduleSpec(duration_s=duration, mean_gap_s=mean_gap, fills=fills)


def _nemesis(
    settings: HarnessSettings, params: ChaosParams, work: Path, *, seed: int, spec: ScheduleSpec,
    iterations: int, report: Path | None,
) -> None:  # fmt: skip
    """Run the schedules, print each before it runs and its verdict after; exit 1 on any failure."""
    from barcode_harness.chaos.nemesis import NemesisRun, run_iterations
    from barcode_harness.chaos.report import RunInfo, write_nemesis_section
    from barcode_harness.chaos.schedule import render

    seeds = list(range(seed, seed + iterations))
    typer.echo(f"chaos nemesis: seeds {seeds[0]}..{seeds[-1]}, {spec.duration_s:g} s each at "
               f"{params.rate:g} scans/s; log: {work / 'pipeline.log'}")  # fmt: skip

    def show(run: NemesisRun) -> None:
        r, drain = run.result, run.stats.last_heal_to_drained_s
        _show(r.ok, f"seed {run.stats.seed}: ack {r.acknowledged} stored {r.stored} lost {r.lost} dup "
                    f"{r.duplicates} last heal -> drained {'-' if drain is None else f'{drain:.1f}s'}",
              r.failures)  # fmt: skip

    t0 = time.monotonic()
    runs = run_iterations(settings, seeds, params, work, spec=spec, on_result=show,
                          on_start=lambda n: typer.echo(render(n.seed, n.schedule)))  # fmt: skip
    if report is not None:
        info = RunInfo(_command(), params, duration_s=time.monotonic() - t0, spec=spec)
        typer.echo(f"nemesis section written to {write_nemesis_section(report, runs, info)}")
    failed = [str(r.stats.seed) for r in runs if not r.result.ok]
    _exit(failed, f"{len(failed)} of {len(runs)} iteration(s) failed: seeds {', '.join(failed)}")


def register(app: typer.Typer) -> None:
    """Add ``chaos`` to the root app."""
    app.command(help=HELP)(chaos)
