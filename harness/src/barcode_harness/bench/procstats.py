"""CPU used per group of processes (ingest, processor, workers, Kafka, ...), read from ``/proc``.

Why: on a 2-core machine where every component shares the cores, "which stage saturated first"
is answered by who burned the CPU while a stage's backlog grew. ``/proc/<pid>/stat`` gives each
process's user+system ticks; a group is a set of root pids plus all their descendants (uvicorn's
worker processes, the load generator's processes). Linux only: elsewhere the figures are empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


def _all_processes() -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[int(name)] = st
    return out


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks over all cores."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


@dataclass(frozen=True)
class CpuSnapshot:
    t: float  # monotonic
    groups: dict[str, int]  # ticks per group
    machine: tuple[int, int] | None


def snapshot(roots: Mapping[str, list[int]], rest: str | None = None) -> CpuSnapshot:
    """Ticks per group: each group is its root pids and their descendants.

    With ``rest`` set, the descendants of this process that belong to no other group are counted
    under that name (e.g. the load generator's own processes).
    """
    procs = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> set[int]:
        seen: set[int] = set()
        stack = [pid]
        while stack:
            p = stack.pop()
            if p in seen or p not in procs:
                continue
            seen.add(p)
            stack.extend(children.get(p, []))
        return seen

    claimed: set[int] = set()
    groups: dict[str, int] = {}
    for name, pids in roots.items():
        members: set[int] = set()
        for pid in pids:
            members |= tree(pid)
        members -= claimed
        claimed |= members
        groups[name] = sum(procs[p][1] for p in members)
    if rest is not None:
        own = tree(os.getpid()) - claimed
        groups[rest] = sum(procs[p][1] for p in own)
    return CpuSnapshot(time.monotonic(), groups, _machine_ticks())


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Average cores each group kept busy between the snapshots (1.0 = one core all the time).

    ``machine`` is the whole machine's busy share times its core count, others' load included.
    """
    dt = after.t - before.t
    if dt <= 0:
        return {}
    out = {
        name: round(max(0, after.groups.get(name, 0) - before.groups.get(name, 0)) / _TICKS / dt, 3)
        for name in after.groups
    }
    if before.machine and after.machine and after.machine[1] > before.machine[1]:
        busy = (after.machine[0] - before.machine[0]) / (after.machine[1] - before.machine[1])
        out["machine"] = round(busy * (os.cpu_count() or 1), 3)
    return out
