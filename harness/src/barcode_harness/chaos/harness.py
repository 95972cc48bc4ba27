"""Runs scenarios: one pipeline under steady client load, a fault, a heal, a drain, then the ledger.

Timeline of one scenario::

    load starts -- warmup -- inject -- hold -- heal -- (load stops) -- clients drain -- pipeline drains
                                               |<------------------ time to drain ------------------>|

The load stops at heal so "drained" means no client holds a pending scan and nothing is in flight;
then every acknowledged scan is looked up. The caller passes the settings of the stack it may break.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from barcode_harness.chaos.checks import Check, Ledger, polled, verify
from barcode_harness.chaos.context import ChaosContext, ChaosParams
from barcode_harness.chaos.faults import ingest_url, resume
from barcode_harness.chaos.load import ScannerLoad
from barcode_harness.chaos.scenarios import Scenario
from barcode_harness.keys import with_harness_key
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.manager import StackManager
from barcode_harness.stack.managers import manager_for
from barcode_pipeline.errors import ConfigError, PipelineError
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.startup import wait_http_ok
from barcode_pipeline.run.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass
class ScenarioResult:
    """One row of the reliability report."""

    key: str
    name: str
    title: str
    fault: str
    sent: int = 0  # scans the clients generated (resends included) + what the scenario sent itself
    acknowledged: int = 0
    stored: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates: int = 0
    client_retries: int = 0  # failed attempts the clients retried (503s, connection errors, ...)
    drain_s: float | None = None  # heal -> clients and pipeline drained
    takeover_s: float | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # what the scenario measured (failover_s, ...)
    error: str | None = None
    reports_takeover: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


@dataclass
class ChaosEnv:
    """The stack and the supervised pipeline every scenario of a run shares."""

    settings: HarnessSettings
    stack: StackManager
    sup: Supervisor
    workdir: Path

    def ensure_healthy(self, timeout: float = 60.0) -> None:
        """Every server up, every child running and supervised, ingest ready: a clean start line."""
        for comp in self.stack.components.values():
            comp.start()
        resume(self.sup, *self.sup.children, timeout=timeout)
        wait_http_ok(f"{ingest_url(self.settings)}/ready", timeout=timeout)


@contextmanager
def chaos_env(settings: HarnessSettings, workdir: Path, *, workers: int = 2) -> Iterator[ChaosEnv]:
    """Stack up, then the pipeline (ingest, processor, workers) until exit; its log is shared with the
    harness, so the services' lines and the fault timeline appear in the order they happened."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings = with_harness_key(settings, "chaos")
    with running_pipeline(settings, log_path=workdir / "pipeline.log", workers=workers) as sup:
        yield ChaosEnv(settings, manager_for(settings), sup, workdir)


def run_scenario(env: ChaosEnv, scenario: Scenario, params: ChaosParams) -> ScenarioResult:
    """Run one scenario end to end; never raises for a pipeline failure (it becomes a failed check)."""
    result = ScenarioResult(scenario.key, scenario.name, scenario.title, scenario.fault,
                            reports_takeover=scenario.reports_takeover)  # fmt: skip
    outbox = env.workdir / f"{scenario.key}-{scenario.name}" / f"outbox-{int(time.time())}.sqlite3"
    url = scenario.load_url(env.settings) or ingest_url(env.settings)
    load = ScannerLoad(url, outbox, rate=params.rate, duplicate_ratio=params.duplicate_ratio,
                       api_key=env.settings.ingest_api_key)  # fmt: skip
    ctx = ChaosContext(env.settings, env.stack, env.sup, params, load, outbox.parent, env.sup.out)
    ledger: Ledger | None = None
    try:
        env.ensure_healthy()
        ledger = _run(scenario, ctx, result)
    except Exception as exc:
        log.exception("scenario %s failed to run", scenario.name)
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if load.running:  # already stopped unless the run failed between the load's start and heal
            with suppress(Exception):
                load.stop_generating()
        try:
            scenario.cleanup(ctx)
        except Exception as exc:
            log.exception("cleanup of %s failed", scenario.name)
            error = f"{type(exc).__name__}: {exc}"
            result.checks.append(Check("cleanup restored the pipeline", False, error))
        ctx.mark(f"=== scenario {scenario.key} {scenario.name} done")
    if ledger is not None:
        _ledger_checks(result, ledger, scenario)
    if result.drain_s is not None:
        target = params.drain_target_s
        result.checks.append(Check(f"drained within {target:.0f} s of heal", result.drain_s <= target,
                                   f"{result.drain_s:.1f} s"))  # fmt: skip
    takeover = ctx.metrics.get("takeover_s")
    result.takeover_s = float(takeover) if isinstance(takeover, (int, float)) else None
    result.checks += ctx.checks
    if result.error:
        result.checks.append(Check("scenario ran to completion", False, result.error))
    result.notes = ctx.notes
    result.metrics = ctx.metrics
    log.info("scenario %s: %s", scenario.name, "PASS" if result.ok else "FAIL")
    return result


def _run(scenario: Scenario, ctx: ChaosContext, result: ScenarioResult) -> Ledger:
    """The timeline of the module docstring, up to the ledger; fills ``result``'s timings and counts."""
    load, params = ctx.load, ctx.params
    wait_drained(ctx.settings, timeout=params.drain_timeout_s)  # start from an empty pipeline
    scenario.before_load(ctx)
    ctx.mark(f"=== scenario {scenario.key} {scenario.name}: load {params.rate:.0f} scans/s")
    ctx.started_ms = time.time_ns() // 1_000_000
    load.start()
    # Load flowing before the warmup counts (no outbox file, or schema, yet: an error, polled again).
    if not polled(lambda: load.counts().acked, lambda n: n >= 1, 0, timeout=30,
                  errors=(ConfigError, sqlite3.OperationalError))[0]:  # fmt: skip
        raise PipelineError("load not flowing: 0 scans acknowledged after 30s (wanted 1)", component="chaos")
    ctx.sleep(params.warmup_s)
    ctx.t_inject = time.monotonic()
    ctx.mark(f"inject: {scenario.fault}")
    scenario.inject(ctx)
    scenario.hold(ctx)
    ctx.t_heal = time.monotonic()
    load.stop_generating()  # the fault's backlog is what must drain; the clock runs from here
    ctx.mark("heal (load stopped)")
    scenario.heal(ctx)
    ctx.mark("healed; draining clients")
    client = load.drain(timeout_s=max(5.0, params.drain_timeout_s - (time.monotonic() - ctx.t_heal)))
    counts = load.counts()
    result.checks += [
        Check("clients have no pending scan", client.drained and counts.pending == 0,
              f"{counts.pending} pending in the outbox"),
        Check("ingest refused no scan (no 4xx)", counts.rejected == 0, f"{counts.rejected} rejected"),
    ]  # fmt: skip
    wait_drained(ctx.settings, timeout=max(5.0, params.drain_timeout_s - (time.monotonic() - ctx.t_heal)))
    result.drain_s = time.monotonic() - ctx.t_heal
    ctx.metrics["drained_at"] = ctx.t_heal + result.drain_s  # monotonic, for scenarios with several heals
    ctx.mark(f"drained {result.drain_s:.1f} s after heal")
    result.sent = counts.total + ctx.extra_sent
    result.client_retries = counts.attempts - counts.sent
    acknowledged = load.acknowledged() | ctx.extra_acked
    ledger = verify(ctx.settings, acknowledged, ctx.started_ms, sent=load.generated() | acknowledged)
    scenario.after_drain(ctx, ledger)
    return ledger


def _ledger_checks(result: ScenarioResult, ledger: Ledger, scenario: Scenario) -> None:
    result.acknowledged = ledger.acknowledged
    result.stored = ledger.stored
    result.dead_lettered = ledger.dead_lettered
    result.lost = ledger.lost
    result.duplicates = ledger.duplicate_rows + ledger.stray_duplicates
    sample = f", e.g. {ledger.lost_sample[:3]}" if ledger.lost else ""
    reasons = f"{ledger.dead_without_reason} without; {ledger.dead_letter_reasons}"
    result.checks += [
        Check("load was flowing", ledger.acknowledged > 0, f"{ledger.acknowledged} scans acknowledged"),
        Check("every acknowledged scan is stored or dead-lettered", ledger.lost == 0,
              f"{ledger.lost} lost{sample}"),
        Check("no scan stored twice", result.duplicates == 0,
              f"{ledger.duplicate_rows} extra rows for acknowledged scans, "
              f"{ledger.stray_duplicates} for any scan saved meanwhile"),
        Check("nothing stored that was never sent", ledger.never_sent == 0,
              f"{ledger.never_sent} rows, e.g. {ledger.never_sent_sample}"),
        Check("no scan both stored and dead-lettered", ledger.stored_and_dead == 0,
              f"{ledger.stored_and_dead}"),
    ]  # fmt: skip
    if ledger.dead_lettered:
        result.checks.append(
            Check("every dead-lettered scan carries its reason", ledger.dead_without_reason == 0, reasons)
        )
    if not scenario.expects_dead_letters:
        result.checks.append(Check("no acknowledged scan dead-lettered", ledger.dead_lettered == 0,
                                   f"{ledger.dead_lettered}: {ledger.dead_letter_reasons}"))  # fmt: skip


def run_scenarios(
    settings: HarnessSettings,
    scenarios: Sequence[Scenario],
    params: ChaosParams,
    workdir: Path,
    *,
    on_result: Callable[[ScenarioResult], object] = lambda _: None,
) -> list[ScenarioResult]:
    """Bring up the stack and pipeline once, then run each scenario in turn."""
    results: list[ScenarioResult] = []
    with chaos_env(settings, workdir) as env:
        for scenario in scenarios:
            results.append(run_scenario(env, scenario, params))
            on_result(results[-1])
    return results
