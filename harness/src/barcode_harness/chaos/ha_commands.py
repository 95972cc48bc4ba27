"""``barcode-pipeline chaos --profile ha``: the ha scenarios against the replicated stack."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer

from barcode_harness.chaos import ha_scenarios
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.ha_report import render_section, write_section
from barcode_harness.chaos.harness import ScenarioResult, run_scenarios
from barcode_harness.chaos.report import RunInfo, machine_info
from barcode_harness.settings import HarnessSettings, load_harness_settings
from barcode_harness.stack.ha_nodes import client_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging

WAIT_OFF_SCENARIOS = ("ha-redis-primary-kill", "ha-redis-split-brain")


def _settings_info(settings: HarnessSettings) -> dict[str, str]:
    return {
        "Kafka brokers / topic RF / min.insync.replicas": f"3 / {settings.kafka.topic_replication} / 2",
        "Redis replicas / min-replicas-to-write": "2 / 1",
        "processor WAIT (BP_REDIS_MIN_REPLICAS, timeout)": f"{settings.redis.min_replicas}, "
        f"{settings.redis.wait_timeout_ms} ms",
        "rewind safety window": f"{settings.redis.rewind_window_s:g} s",
        "produce timeout (ingest answers 503 after)": f"{settings.kafka.produce_timeout_s:g} s",
        "workers": str(settings.worker.count),
    }


def chaos_ha(scenarios: list[str] | None, *, list_: bool, rate: float, warmup: float, hold: float,
             drain_timeout: float, report: Path | None, no_report: bool, workdir: Path | None,
             wait_off: bool) -> None:  # fmt: skip
    """Run the chosen ha scenarios (see ``chaos --profile ha --list``); exit 1 if any fails."""
    if list_:
        for s in ha_scenarios.select(["all"]):
            typer.echo(f"{s.key:>3}  {s.name:<28} {s.title}")
        return
    if not scenarios:
        raise ConfigError("name a scenario (see `barcode-pipeline chaos --profile ha --list`) or `all`")
    chosen = ha_scenarios.select(scenarios)
    settings = client_settings(load_harness_settings(stack_profile="ha"))
    setup_logging(settings.log_level, "chaos")
    params = ChaosParams(rate=rate, warmup_s=warmup, hold_s=hold, drain_timeout_s=drain_timeout)
    work = workdir or settings.state_dir / "chaos" / time.strftime("%Y%m%d-%H%M%S")
    if report is None and not no_report and "all" in scenarios:
        report = Path("docs/reliability.md")
    typer.echo(f"chaos (ha): {len(chosen)} scenario(s) at {rate:g} scans/s; log: {work / 'pipeline.log'}")

    def show(r: ScenarioResult) -> None:
        verdict = typer.style("PASS", fg="green") if r.ok else typer.style("FAIL", fg="red", bold=True)
        typer.echo(f"{verdict} {r.key:>3} {r.name:<28} ack {r.acknowledged:>6} stored {r.stored:>6} "
                   f"lost {r.lost} dup {r.duplicates} failover {r.metrics.get('failover_s', '-')} s "
                   f"drain {'-' if r.drain_s is None else f'{r.drain_s:.1f}s'} "
                   f"rewound {r.metrics.get('rewound', 0)}")  # fmt: skip
        for failed in r.failures:
            typer.echo(f"      failed: {failed.name}: {failed.detail}")

    started = time.monotonic()
    runs = [("WAIT on (the default)", run_scenarios(settings, chosen, params, work, on_result=show))]
    if wait_off:
        off = settings.updated({"redis_min_replicas": 0})
        evidence = [s for s in ha_scenarios.select(list(WAIT_OFF_SCENARIOS))]
        typer.echo("chaos (ha): the same Redis faults with WAIT off (evidence, not a pass condition)")
        runs.append(("WAIT off (BP_REDIS_MIN_REPLICAS=0): evidence only",
                     run_scenarios(off, evidence, params, work / "wait-off", on_result=show)))  # fmt: skip
    if report is not None and not no_report:
        command = "barcode-pipeline chaos " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        info = RunInfo(command=command.strip(), params=params, settings=_settings_info(settings),
                       machine=machine_info(), duration_s=time.monotonic() - started)  # fmt: skip
        typer.echo(f"report section written to {write_section(report, render_section(runs, info))}")
    failed = [r.name for r in runs[0][1] if not r.ok]
    if failed:
        typer.echo(f"{len(failed)} scenario(s) failed: {', '.join(failed)}", err=True)
    raise typer.Exit(1 if failed else 0)
