"""Running the open-loop generator for the bench commands: one load in-process, or several at once.

Why processes for simultaneous loads: two event loops in one process would share a GIL and charge one
load's client work to the other's latency. Each gets its own spawned process, warmed up first so they
start within milliseconds of each other; results are aligned on their wall-clock start.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from barcode_harness.bench.histogram import LatencyHistogram, LatencySummary
from barcode_harness.bench.loadgen import LoadResult, LoadSpec, Mode, run_load
from barcode_pipeline.ops.verify import ScanWindow

SINGLE_PROCESS_MAX_RPS = 2500.0  # above this one generator process adds its own queueing here


class Step(Protocol):
    @property
    def sustained(self) -> bool: ...


S = TypeVar("S", bound=Step)


def grow_then_bisect(
    attempt: Callable[[float], S],
    rate: float,
    growth: float,
    max_rate: float,
    refine_steps: int,
    tries: float = math.inf,
    *,
    tens: bool = False,
) -> tuple[float, list[S]]:
    """The highest rate sustained and each attempt: geometric growth until one fails, then
    ``refine_steps`` bisections; at most ``tries`` attempts, grown and halved rates rounded to tens
    when ``tens``."""
    steps: list[S] = []

    def sustained(rate: float) -> bool:
        steps.append(attempt(rate))
        return steps[-1].sustained

    def rounded(x: float) -> float:
        return round(x, -1) if tens else x

    good, bad = 0.0, math.inf
    while math.isinf(bad) and rate <= max_rate and len(steps) < tries:
        if sustained(rate):
            good, rate = rate, rounded(rate * growth)
        else:
            bad = rate
    for _ in range(refine_steps if math.isfinite(bad) else 0):
        mid = round((good + bad) / 2, -1) if good else rounded(bad / 2)
        if mid in (good, bad) or mid <= 0 or len(steps) >= tries:
            break
        good, bad = (mid, bad) if sustained(mid) else (good, mid)
    return good, steps


def spec_for(
    url: str,
    *,
    rate: float,
    duration_s: float,
    concurrency: int = 512,
    mode: Mode = "single",
    batch_size: int = 100,
    acked: Path | None = None,
    processes: int | None = None,
    timeout_s: float = 10.0,
    api_key: str = "",
) -> LoadSpec:
    """A load of ``rate`` requests/s; processes chosen by rate unless given."""
    procs = processes or (1 if rate <= SINGLE_PROCESS_MAX_RPS else 2)
    return LoadSpec(
        url=url,
        rate=rate,
        duration_s=duration_s,
        concurrency_limit=max(concurrency, procs),
        mode=mode,
        batch_size=batch_size,
        processes=procs,
        acked_ids_path=acked,
        timeout_s=timeout_s,
        api_key=api_key,
    )


def acked_ids(result: LoadResult) -> list[str]:
    path = result.spec.acked_ids_path
    return path.read_text().split() if path is not None and path.exists() else []


# The load stamps each scan with its sender's clock when it builds the request; a minute of slack
# covers a slow start without widening the window to earlier runs' rows by much.
WINDOW_SLACK_MS = 60_000


def scan_window(result: LoadResult) -> ScanWindow:
    """Where a run's scans are stored: its devices, scanned since it started (see ``ScanWindow``)."""
    return ScanWindow(tuple(result.spec.devices), int(result.started_at * 1000) - WINDOW_SLACK_MS)


def merged_latency(results: list[LoadResult]) -> LatencySummary:
    """Exact percentiles over several runs (HDR histograms add up; percentiles do not average)."""
    return LatencyHistogram.merged(r.latency_hdr for r in results if r.latency_hdr).summary()


def series(result: LoadResult, t0: float | None = None) -> dict[str, list[float]]:
    """Per-second latency and errors, t relative to ``t0`` (wall clock; default the load's start)."""
    base = result.started_at - (t0 if t0 is not None else result.started_at)
    points = result.timeseries
    return {
        "t": [round(base + p.second, 2) for p in points],
        **{key: [getattr(p, key) for p in points] for key in ("p50_ms", "p99_ms", "max_ms", "errors", "ok")},
    }


_SUMMARY_SPEC = ("rate", "mode", "scans_per_request", "duration_s", "concurrency_limit", "processes")
_SUMMARY = (
    "scheduled", "ok", "errors", "error_rate", "status_counts", "scans_acked", "achieved_rps", "latency_ms",
    "service_time_ms", "dispatch_lag_ms", "client_cpu", "generator_saturated", "started_at",
)  # fmt: skip


def summary_dict(result: LoadResult) -> dict[str, Any]:
    """The compact figures a report keeps of one load (the full result goes to the JSON as well)."""
    full = result.to_dict(with_histograms=False)
    return {**{k: getattr(result.spec, k) for k in _SUMMARY_SPEC}, **{k: full[k] for k in _SUMMARY}}


def _warm(seconds: float) -> int:
    """Run in each pool process once, so every process is spawned and imported before the clock."""
    import barcode_harness.bench.loadgen  # noqa: F401 - the import is the warm-up

    time.sleep(seconds)
    return 0


class ParallelLoads:
    """A pool of ``n`` warmed-up processes; :meth:`submit` starts a load at once in one of them."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> ParallelLoads:
        for fut in [self._pool.submit(_warm, 1.0) for _ in range(self._n)]:
            fut.result(timeout=120)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._pool.shutdown(wait=exc_type is None, cancel_futures=True)

    def submit(self, spec: LoadSpec) -> Future[LoadResult]:
        return self._pool.submit(run_load, replace(spec, processes=1))


__all__ = ["ParallelLoads", "acked_ids", "merged_latency", "run_load", "series", "spec_for", "summary_dict"]
