"""``chaos nemesis``: a seeded random fault schedule under load, judged by the usual ledger. A thread per
target, so faults overlap as drawn; servers come back by ``stack up``, one at a time (else two start one)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from pathlib import Path

from barcode_harness.bench.procstats import group_pids
from barcode_harness.bench.soak import RSS_GROWTH_MAX, SERVICE_GROUPS, fds_keep_growing, rss_growth
from barcode_harness.bench.soaksample import SoakSampler
from barcode_harness.chaos import faults, schedule
from barcode_harness.chaos.checks import Ledger
from barcode_harness.chaos.context import ChaosContext, ChaosParams
from barcode_harness.chaos.harness import ChaosEnv, ScenarioResult, chaos_env, run_scenario
from barcode_harness.chaos.scenarios import Scenario, drained_after_heal
from barcode_harness.chaos.schedule import DISK, Fault, ScheduleSpec
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names

log = logging.getLogger(__name__)


@dataclass
class NemesisStats:
    """What one iteration did, for the report."""

    seed: int
    faults: list[Fault] = field(default_factory=list)
    overlapping_pairs: int = 0
    done: list[str] = field(default_factory=list)  # timeline as executed: "t+3.2s kill redis"
    applied: int = 0  # faults carried out and healed
    skipped: list[str] = field(default_factory=list)  # faults that found nothing to act on
    last_heal_to_drained_s: float | None = None
    samples: int = 0  # memory and descriptor readings taken across the schedule


class Nemesis(Scenario):
    """One seed's schedule as a scenario: inject starts it, hold waits until every fault is healed."""

    key = "N"
    name = "nemesis"

    def __init__(self, seed: int, *, workers: int = 2, spec: ScheduleSpec | None = None) -> None:
        self.seed = seed
        self.spec = spec or ScheduleSpec()
        self.schedule = schedule.draw(seed, schedule.targets_for(workers, self.spec), self.spec)
        self.stats = NemesisStats(seed, list(self.schedule), len(schedule.overlaps(self.schedule)))
        self.title = f"Nemesis seed {seed}"
        self.fault = f"{len(self.schedule)} faults, {self.stats.overlapping_pairs} overlapping pairs"
        self._threads: list[threading.Thread] = []
        self._abort = threading.Event()
        self._stack_lock = threading.Lock()
        self._last_heal = 0.0
        self._started = 0.0
        self._sampler: SoakSampler | None = None

    def inject(self, ctx: ChaosContext) -> None:
        ctx.mark(schedule.render(self.seed, self.schedule))
        every = min(30.0, max(5.0, self.spec.duration_s / 60))  # about sixty readings, 5 to 30 s apart
        self._sampler = SoakSampler(
            ctx.settings, ctx.stack.component("kafka").data_dir,  # type: ignore[attr-defined]
            lambda: group_pids([ctx.sup], ctx.stack.components), every,
        ).__enter__()  # fmt: skip
        self._started = time.monotonic()
        for target, mine in groupby(sorted(self.schedule, key=attrgetter("target")), attrgetter("target")):
            t = threading.Thread(target=self._run_target, args=(ctx, list(mine)), name=f"nemesis-{target}")
            t.start()
            self._threads.append(t)

    def hold(self, ctx: ChaosContext) -> None:
        """Keep the load up for the whole schedule, and until its last fault is healed."""
        ctx.sleep(max(0.0, self.spec.duration_s - ctx.since_inject()))
        for t in self._threads:
            while t.is_alive():
                ctx.sleep(0.2)
        self._last_heal = self._last_heal or time.monotonic()

    def _run_target(self, ctx: ChaosContext, mine: list[Fault]) -> None:
        for f in mine:
            if self._abort.wait(max(0.0, self._started + f.at_s - time.monotonic())):
                return
            try:
                if self._apply(ctx, f):
                    self.stats.applied += 1
                    self._last_heal = max(self._last_heal, time.monotonic())
                else:
                    self.stats.skipped.append(f.describe())
            except Exception as exc:
                log.exception("nemesis: %s failed", f.describe())
                ctx.check(f"nemesis step ran: {f.describe()}", False, f"{type(exc).__name__}: {exc}")

    def _mark(self, ctx: ChaosContext, text: str) -> None:
        line = f"t+{time.monotonic() - self._started:5.1f}s {text}"
        self.stats.done.append(line)
        ctx.mark(f"nemesis: {line}")

    def _apply(self, ctx: ChaosContext, f: Fault) -> bool:
        """Carry out one fault and heal it; False if it found nothing to act on."""
        if f.kind == "full":
            return self._fill(ctx, f)
        if f.kind == "pause":
            with self._server_lock(f):  # never pause a server while `stack up` is looking at it
                pid = self._pid(ctx, f.target)
                if pid is None:
                    self._mark(ctx, f"pause {f.target}: not running, skipped")
                    return False
                os.kill(pid, signal.SIGSTOP)
            try:  # cleanup's abort ends the wait: the SIGCONT always comes from here
                self._mark(ctx, f"SIGSTOP {f.target} (pid {pid})")
                self._abort.wait(f.for_s)
            finally:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self._mark(ctx, f"SIGCONT {f.target}")
            return True
        if f.is_server:
            comp = ctx.stack.component(f.target)
            with self._stack_lock:  # a server going down under a running `stack up` fails it
                (comp.kill if f.kind == "kill" else comp.stop)()
                self._mark(ctx, f"{'SIGKILL' if f.kind == 'kill' else 'clean shutdown of'} {f.target}")
            self._abort.wait(f.for_s)
            self._stack_up(ctx, f.target)
            return True
        if f.kind == "kill":
            faults.kill_child(ctx.sup, f.target, restart=False)
            self._mark(ctx, f"SIGKILL {f.target}")
        else:
            code = faults.stop_child(ctx.sup, f.target)
            self._mark(ctx, f"SIGTERM {f.target} (exit {code})")
        self._abort.wait(f.for_s)
        faults.resume(ctx.sup, f.target, timeout=60)
        self._mark(ctx, f"{f.target} running again")
        return True

    def _fill(self, ctx: ChaosContext, f: Fault) -> bool:
        """Redis full (maxmemory) or the servers' disk full (a ballast file), for the duration."""
        if f.target == DISK:
            # No `stack up` (nor a server fault) while the disk is full: it would fail writing its
            # files, which is the disk's fault, not the pipeline's. They wait for the free disk.
            with self._stack_lock:
                ballast, size = faults.fill_disk(ctx.settings.state_dir)
                try:
                    self._mark(ctx, f"disk full: {size / 2**20:,.0f} MiB of ballast in {ballast.parent}")
                    self._abort.wait(f.for_s)
                finally:
                    ballast.unlink(missing_ok=True)
                self._mark(ctx, "disk free again")
            self._stack_up(ctx, DISK)  # a server that died of the full disk comes back, as an operator would
            return True
        with self._server_lock(f):  # not while `stack up` may be restarting Redis
            if self._pid(ctx, f.target) is None:
                self._mark(ctx, "fill redis: not running, skipped")
                return False
            old = faults.set_maxmemory(ctx.settings)
        self._mark(ctx, f"Redis full (maxmemory {faults.FULL_MAXMEMORY}, was {old})")
        self._abort.wait(f.for_s)
        with self._server_lock(f):
            faults.set_maxmemory(ctx.settings, old)
        self._mark(ctx, "Redis maxmemory restored")
        return True

    def _stack_up(self, ctx: ChaosContext, target: str) -> None:
        """`stack up`, up to three times as an operator would if it failed (say, a server paused too long)."""
        with self._stack_lock:
            for _ in range(3):
                started = time.monotonic()
                result = faults.run_cli(ctx.settings, ["stack", "up"], timeout=180)
                self._mark(ctx, f"`stack up` (for {target}) rc {result.returncode} in "
                                f"{time.monotonic() - started:.1f} s")  # fmt: skip
                if result.returncode == 0:
                    break
            ctx.check(f"`stack up` after the {target} fault succeeded", result.returncode == 0,
                      result.stderr.strip()[-300:])  # fmt: skip

    def _server_lock(self, f: Fault) -> AbstractContextManager[object]:
        return self._stack_lock if f.is_server else nullcontext()

    @staticmethod
    def _pid(ctx: ChaosContext, target: str) -> int | None:
        if target in schedule.SERVERS:
            return ctx.stack.component(target).pid()
        child = ctx.sup.children[target]
        return child.pid if child.alive() else None

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        self._judge_flatness(ctx)
        # Timed from the later of the last heal and the load's end: a long schedule keeps its load up
        # through a quiet quarter after the last fault, whose normal work the last heal alone would
        # count (474 s on the first 30-minute run, whose pipeline drained 1.2 s after the load stopped).
        last = max(self._last_heal, ctx.t_heal) if self._last_heal else 0.0
        self.stats.last_heal_to_drained_s = drained_after_heal(ctx, last, "the last fault was healed")

    def _judge_flatness(self, ctx: ChaosContext) -> None:
        """The soak's memory and descriptor checks across the schedule (the services' memory, restarted
        by the faults now and then; every group's descriptors). Skipped when the schedule is too short."""
        assert self._sampler is not None  # inject started it
        self._sampler.__exit__()  # cleanup exits it again: a no-op
        samples = self._sampler.samples
        self.stats.samples = len(samples)
        for group in SERVICE_GROUPS:  # not this process: it also holds the clients' ledger
            growth = rss_growth(samples, group)
            if growth is not None:
                ctx.check(f"{group} RSS grew at most {RSS_GROWTH_MAX:.0%} across the schedule",
                          growth <= RSS_GROWTH_MAX, f"{growth:+.1%}")  # fmt: skip
        groups = sorted({g for s in samples for g in s.groups})
        if len(samples) >= 8:
            rising = [g for g in groups if fds_keep_growing(samples, g)]
            ctx.check("no group's open descriptors rose in every quarter", not rising, ", ".join(rising))

    def cleanup(self, ctx: ChaosContext) -> None:
        self._abort.set()
        if self._sampler is not None:
            self._sampler.__exit__()
        for t in self._threads:
            t.join(60)
        ctx.stack.up(quiet=True)
        faults.resume(ctx.sup, *ctx.sup.children, timeout=60)
        ctx.notes.extend(self.stats.done)


@dataclass
class NemesisRun:
    """One iteration: the seed's schedule, what it did, and the usual scenario verdict."""

    stats: NemesisStats
    result: ScenarioResult


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
