"""Random fault schedules for ``chaos nemesis``: pure, seeded, and printable so a failure replays.
Faults on different targets overlap (a component recovering into the next fault); on one, they follow."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

SERVERS = ("kafka", "redis", "mariadb")
KINDS = ("kill", "pause", "restart")
DISK = "disk"  # the filesystem under the stack's state directory, all three servers' data
FILLABLE = ("redis", DISK)  # targets a "full" fault can hit when the spec asks for them

# What each kind means, per kind of target (for the printed schedule and the report).
MEANING = {
    ("kill", "service"): "SIGKILL; restarts held off for the duration, then the supervisor restarts it",
    ("pause", "service"): "SIGSTOP for the duration, then SIGCONT",
    ("restart", "service"): "SIGTERM (graceful stop), started again after the duration",
    ("kill", "server"): "SIGKILL; `stack up` after the duration",
    ("pause", "server"): "SIGSTOP for the duration, then SIGCONT",
    ("restart", "server"): "clean shutdown; `stack up` after the duration",
    ("full", "server"): "Redis full: maxmemory below its use (writes refused), restored after the duration",
    ("full", "disk"): "the servers' disk full (a ballast file); removed after the duration, then `stack up`",
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``kind`` on ``target`` from ``at_s`` (seconds into the schedule) for ``for_s``."""

    at_s: float
    target: str
    kind: str
    for_s: float

    @property
    def end_s(self) -> float:
        return self.at_s + self.for_s

    @property
    def is_server(self) -> bool:
        return self.target in SERVERS

    def describe(self) -> str:
        return f"t+{self.at_s:5.1f}s {self.kind:<7} {self.target:<10} for {self.for_s:4.1f}s"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """Shape of a drawn schedule. Defaults fit a 40-60 s iteration on a 2-core machine."""

    duration_s: float = 40.0  # faults start within the first ``active_share`` of this
    active_share: float = 0.75  # the rest is quiet time for the last heals to finish under load
    mean_gap_s: float = 3.0  # mean time between fault starts over all targets (exponential gaps)
    min_for_s: float = 1.0
    max_for_s: float = 8.0
    # A pause of the processor this long outlives its session timeout (10 s): the broker expels
    # it and it must rejoin on SIGCONT. Drawn now and then on purpose.
    long_pause_s: float = 12.0
    long_pause_share: float = 0.2
    settle_s: float = 1.0  # gap after a target's heal before its next fault
    # Targets that may also be filled ("full" faults): Redis (maxmemory) and the disk. Off by default,
    # so the schedule of a seed stays what it was; a long nemesis turns them on.
    fills: tuple[str, ...] = ()


def kinds_for(target: str, spec: ScheduleSpec) -> tuple[str, ...]:
    """What can happen to ``target``: the disk can only fill; Redis can also fill when asked."""
    return ("full",) if target == DISK else (*KINDS, "full") if target in spec.fills else KINDS


def targets_for(workers: int, spec: ScheduleSpec = ScheduleSpec()) -> tuple[str, ...]:
    """The processor, each worker, the three servers (and their disk, when the spec fills it)."""
    disk = (DISK,) if DISK in spec.fills else ()
    return ("processor", *(f"worker-{i}" for i in range(1, workers + 1)), *SERVERS, *disk)


def draw(seed: int, targets: Sequence[str], spec: ScheduleSpec = ScheduleSpec()) -> list[Fault]:
    """The schedule for ``seed`` (always the same faults): Poisson starts over the active window, each on
    a random target and kind, held uniform [min, max]; a start while its target is faulted moves to just
    after that heal, or is dropped past the window."""
    rng = random.Random(seed)
    window = spec.duration_s * spec.active_share
    free_at = dict.fromkeys(targets, 0.0)
    faults: list[Fault] = []
    t = rng.uniform(0.0, spec.mean_gap_s / 2)
    while t < window:
        target = rng.choice(list(targets))
        kind = rng.choice(kinds_for(target, spec))
        for_s = round(rng.uniform(spec.min_for_s, spec.max_for_s), 1)
        if kind == "pause" and target == "processor" and rng.random() < spec.long_pause_share:
            for_s = spec.long_pause_s
        at = round(max(t, free_at[target]), 1)
        if at < window:
            faults.append(Fault(at, target, kind, for_s))
            free_at[target] = at + for_s + spec.settle_s
        t += rng.expovariate(1.0 / spec.mean_gap_s)
    return sorted(faults, key=lambda f: (f.at_s, f.target))


def overlaps(faults: Sequence[Fault]) -> list[tuple[Fault, Fault]]:
    """Pairs of faults in effect at the same time (on different targets, by construction)."""
    return [(a, b) for a, b in combinations(sorted(faults, key=lambda f: f.at_s), 2) if b.at_s < a.end_s]


def render(seed: int, faults: Sequence[Fault]) -> str:
    """The schedule as printed before a run (and in the report), enough to replay it by seed."""
    lines = [f"nemesis seed {seed}: {len(faults)} faults, {len(overlaps(faults))} overlapping pairs"]
    lines += [f"  {f.describe()}" for f in faults]
    return "\n".join(lines)
