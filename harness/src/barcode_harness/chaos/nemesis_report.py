"""Running ``chaos nemesis`` iterations and their section of ``docs/reliability.md``, between two
markers: ``chaos nemesis`` rewrites it in place and ``chaos all`` carries it over unchanged."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from barcode_harness import sections
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ChaosEnv, ScenarioResult, chaos_env, run_scenario
from barcode_harness.chaos.nemesis import Nemesis, NemesisStats
from barcode_harness.chaos.report import RunInfo, cell, num
from barcode_harness.chaos.schedule import KINDS, MEANING, ScheduleSpec
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names


def markers(spec: ScheduleSpec) -> tuple[str, str]:
    """The section a run writes: a long schedule (the soak-length one) does not replace the series."""
    return sections.LONG_NEMESIS if spec.duration_s >= sections.LONG_NEMESIS_S else sections.NEMESIS


@dataclass
class NemesisRun:
    """One iteration: the seed's schedule, what it did, and the usual scenario verdict."""

    stats: NemesisStats
    result: ScenarioResult


@dataclass
class NemesisInfo(RunInfo):
    """A nemesis run's facts: those of any chaos run, and its schedule's shape."""

    spec: ScheduleSpec = field(default_factory=ScheduleSpec)


def run_iterations(
    settings: HarnessSettings,
    seeds: list[int],
    params: ChaosParams,
    workdir: Path,
    *,
    spec: ScheduleSpec | None = None,
    on_start: Callable[[Nemesis], object] = lambda _: None,
    on_result: Callable[[NemesisRun], object] = lambda _: None,
    env: ChaosEnv | None = None,
) -> list[NemesisRun]:
    """Run one schedule per seed, in order, on one pipeline (like ``run_scenarios``)."""
    runs: list[NemesisRun] = []
    with nullcontext(env) if env is not None else chaos_env(settings, workdir) as e:
        for seed in seeds:
            nemesis = Nemesis(seed, workers=len(e.sup.names(names.Role.WORKER)), spec=spec)
            on_start(nemesis)
            runs.append(NemesisRun(nemesis.stats, run_scenario(e, nemesis, params)))
            on_result(runs[-1])
    return runs


def render_section(runs: list[NemesisRun], info: NemesisInfo) -> str:
    p, s = info.params, info.spec
    passed = sum(1 for r in runs if r.result.ok)
    drains = [r.stats.last_heal_to_drained_s for r in runs if r.stats.last_heal_to_drained_s is not None]
    kinds = {(f.target, f.kind) for r in runs for f in r.stats.faults}
    begin, end = markers(s)
    kinds_shown = (*KINDS, "full") if s.fills else KINDS
    long = " (a long schedule)" if (begin, end) == sections.LONG_NEMESIS else ""
    lines = [
        begin,
        f"## Nemesis: random overlapping faults{long}",
        "",
        "`barcode-pipeline chaos nemesis` draws a fault schedule from a seed (`random.Random(seed)`) and "
        f"runs it under the same {p.rate:.0f} scans/s client load and the same ledger as the scenarios "
        "above: every acknowledged scan stored or dead-lettered, none stored twice, nothing stored that "
        f"was never sent. A schedule spans {s.duration_s:g} s; faults start in its first "
        f"{s.active_share:.0%} as a Poisson process (mean gap {s.mean_gap_s:g} s), each on a random "
        f"target and of a random kind, held {s.min_for_s:g}-{s.max_for_s:g} s (a processor pause is "
        f"sometimes {s.long_pause_s:g} s, past its session timeout). Faults on different targets "
        "overlap; faults on one target follow each other. The load runs until the schedule's end "
        "and the last fault is healed; the drain is timed from the later of the two. A client whose "
        "outbox holds a backlog after an outage resends it through the batch endpoint (up to 100 "
        "scans a request), as a scanner catching up would; new scans still go one per request.",
        "",
        "| kind | on a service (processor, worker-N) | on a server (Kafka, Redis, MariaDB) |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {MEANING[(k, 'service')]} | {MEANING[(k, 'server')]} |" for k in KINDS]
    if s.fills:
        lines += [f"| full | - | {MEANING[('full', 'server')]}; the disk: {MEANING[('full', 'disk')]} |"]
    lines += [
        "",
        f"**{passed} of {len(runs)} iterations passed** (finished {info.finished_at}, "
        f"{info.duration_s / 60:.1f} min); {sum(r.result.lost for r in runs)} acknowledged scans lost, "
        f"{sum(r.result.duplicates for r in runs)} duplicates; last heal → drained at most "
        f"{num(max(drains) if drains else None)} s (target {p.drain_target_s:g} s); "
        f"{len(kinds)} distinct (target, kind) pairs exercised.",
        "",
        f"| seed | faults | overlapping pairs | kinds ({'/'.join(kinds_shown)}) | acknowledged | stored "
        "| lost | duplicates | last heal → drained (s) | result |",
        "|--:|--:|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in runs:
        counts = "/".join(str(sum(1 for f in r.stats.faults if f.kind == k)) for k in kinds_shown)
        lines.append(
            f"| {r.stats.seed} | {len(r.stats.faults)} | {r.stats.overlapping_pairs} | {counts} "
            f"| {r.result.acknowledged} | {r.result.stored} | {r.result.lost} | {r.result.duplicates} "
            f"| {num(r.stats.last_heal_to_drained_s)} | {'pass' if r.result.ok else '**FAIL**'} |"
        )
    flat = [
        (r.stats.seed, c) for r in runs for c in r.result.checks if "RSS" in c.name or "descriptors" in c.name
    ]
    if flat:
        first = runs[0].stats
        lines += ["", f"Memory and descriptors across the schedule ({first.samples} readings for seed "
                  f"{first.seed}, the soak's checks):", ""]  # fmt: skip
        lines += [
            f"- seed {seed}: {'✅' if c.ok else '❌'} {cell(c.name)}: {cell(c.detail) or 'none'}"
            for seed, c in flat
        ]
    failed = [r for r in runs if not r.result.ok]
    if failed:
        lines += ["", "### Failed iterations", ""]
        for r in failed:
            lines += [f"Seed {r.stats.seed}:", ""]
            lines += [f"- ❌ {cell(c.name)}: {cell(c.detail)}" for c in r.result.failures]
            if r.result.error:
                lines.append(f"- error: {cell(r.result.error)}")
            lines += ["", "```", *r.stats.done, "```", ""]
    lines += [
        "",
        "Replay one seed exactly (the schedule is printed before it runs, and each executed step is "
        "in the pipeline log with its offset):",
        "",
        "```sh",
        "# on a disposable stack, as for `chaos all`",
        f"{info.command}",
        "barcode-pipeline chaos nemesis --seed <seed> --duration "
        f"{s.duration_s:g} --iterations 1 --no-report",
        "```",
        "",
        end,
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, runs: list[NemesisRun], info: NemesisInfo) -> Path:
    return sections.write(path, render_section(runs, info), markers(info.spec))
