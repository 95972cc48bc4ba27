"""CPU, memory, descriptors and threads per group of processes (ingest, Kafka, ...), and the machine.

Why: where every component shares 2 cores, "which stage saturated first" is answered by who burned the
CPU while a stage's backlog grew. A group is root pids plus all their descendants (uvicorn's workers,
the load generator's processes), read from Linux's ``/proc`` (the harness runs on Debian).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from barcode_pipeline.run.supervisor import Supervisor

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of one process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _all_processes() -> dict[int, tuple[int, int]]:
    """(ppid, ticks) of every process, by pid."""
    stats = {int(name): _stat(int(name)) for name in os.listdir("/proc") if name.isdigit()}
    return {pid: st for pid, st in stats.items() if st is not None}


def cpu_fields() -> list[int] | None:
    """The machine's CPU ticks since boot, from ``/proc/stat``: user nice system idle iowait irq softirq
    steal (guest time is already in user and nice, so it is left out); None without /proc."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields + [0] * (8 - len(fields))


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) ticks over all cores (idle and iowait are not busy); None without /proc."""
    if (fields := cpu_fields()) is None:
        return None
    return sum(fields) - fields[3] - fields[4], sum(fields)


@dataclass(frozen=True)
class CpuSnapshot:
    t: float  # monotonic
    groups: dict[str, int]  # ticks per group
    machine: tuple[int, int] | None


def _members(roots: Mapping[str, list[int]], procs: Mapping[int, tuple[int, int]]) -> dict[str, set[int]]:
    """Each group's processes: its root pids and their descendants, each in the first group reaching it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    groups: dict[str, set[int]] = {name: set() for name in roots}
    taken: set[int] = set()
    for name, pids in roots.items():
        stack = list(pids)
        while stack:
            pid = stack.pop()
            if pid in procs and pid not in taken:
                groups[name].add(pid)
                taken.add(pid)
                stack.extend(children.get(pid, ()))
    return groups


def snapshot(roots: Mapping[str, list[int]], rest: str | None = None) -> CpuSnapshot:
    """Ticks per group; with ``rest``, this process's descendants in no other group count under that
    name (e.g. the load generator's own processes)."""
    procs = _all_processes()
    if rest is not None:
        roots = {**roots, rest: [os.getpid()]}
    groups = {name: sum(procs[p][1] for p in pids) for name, pids in _members(roots, procs).items()}
    return CpuSnapshot(time.monotonic(), groups, machine_ticks())


@dataclass(frozen=True)
class Resources:
    """What a group of processes holds: resident memory, open descriptors, threads (summed)."""

    rss_bytes: int
    fds: int
    threads: int
    processes: int


def _held(pid: int) -> tuple[int, int, int] | None:
    """(RSS bytes, open fds, threads) of one process, or None if it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss_kib = int(status.get(b"VmRSS", b"0 kB").split()[0])
    return rss_kib * 1024, fds, int(status.get(b"Threads", b"0").strip())


def resources(roots: Mapping[str, list[int]], *, alone: Collection[str] = ()) -> dict[str, Resources]:
    """Memory, descriptors and threads per group (each root and its descendants, except for the groups
    named in ``alone``: their roots only, e.g. a process whose children are the other groups)."""
    out: dict[str, Resources] = {}
    members = _members({k: v for k, v in roots.items() if k not in alone}, _all_processes())
    members.update({k: set(v) for k, v in roots.items() if k in alone})
    for name, pids in members.items():
        held = [h for h in map(_held, pids) if h is not None]
        rss, fds, threads = (sum(col) for col in zip((0, 0, 0), *held, strict=True))
        out[name] = Resources(rss, fds, threads, len(held))
    return out


def busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all cores busy between two :func:`machine_ticks` readings (anyone's work)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each group used between the snapshots."""
    return {name: max(0, ticks - before.groups.get(name, 0)) / _TICKS for name, ticks in after.groups.items()}


def cores_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Average cores each group kept busy between the snapshots (1.0 = one core all the time).

    ``machine`` is the whole machine's busy share times its core count, others' load included.
    """
    dt = after.t - before.t
    if dt <= 0:
        return {}
    out = {name: round(seconds / dt, 3) for name, seconds in cpu_seconds(before, after).items()}
    busy = busy_share(before.machine, after.machine)
    if busy is not None:
        out["machine"] = round(busy * (os.cpu_count() or 1), 3)
    return out


def group_pids(supervisors: Iterable[Supervisor | None], servers: Mapping[str, Any]) -> dict[str, list[int]]:
    """Root pids per group: each supervised role (the workers together) and each server of the stack."""
    groups: dict[str, list[int]] = {}
    for sup in supervisors:
        for child in sup.children.values() if sup is not None else ():
            if child.pid is not None:
                role = "workers" if child.spec.role == "worker" else child.spec.role
                groups.setdefault(role, []).append(child.pid)
    return groups | {name: [pid] for name, c in servers.items() if (pid := c.pid()) is not None}


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and the load average when the run started (others' load distorts)."""
    with open("/proc/cpuinfo", encoding="utf-8") as info:  # ARM kernels name no model: the fallback
        models = [line.split(":", 1)[1].strip() for line in info if line.lower().startswith("model name")]
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu_model": models[0] if models else platform.processor() or "unknown",
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
