"""The load generator's own ceiling: the same load against a trivial endpoint (``calibrate``), and the
highest rate it sustains there (``find_ceiling``), so a benchmark can tell the client's limits from
the server's. Entry point: ``python -m barcode_harness.bench.loadgen_cli``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from barcode_harness.bench.loadgen import LoadResult, LoadSpec, run_load


def calibrate(spec: LoadSpec, *, server_processes: int = 1) -> LoadResult:
    """The same load against the trivial endpoint: the latency the generator itself adds at this rate.

    The endpoint runs in its own process(es), sharing the machine's cores with the generator,
    exactly as a real server under test would.
    """
    from barcode_harness.bench.trivial_server import TrivialServerProcess

    with TrivialServerProcess(processes=server_processes) as server:
        return run_load(replace(spec, url=server.url, acked_ids_path=None))


@dataclass(frozen=True)
class CeilingStep:
    rate: float
    sustained: bool
    result: LoadResult


def find_ceiling(
    template: LoadSpec,
    *,
    start_rate: float = 1000.0,
    growth: float = 1.5,
    refine_steps: int = 3,
    max_rate: float = 200_000.0,
    max_p99_ms: float = 20.0,
    on_step: Callable[[CeilingStep], None] | None = None,
) -> tuple[float, list[CeilingStep]]:
    """Highest rate of ``template`` (url and all) that is sustained: grow geometrically, then bisect.

    Against the trivial endpoint this is the generator's own ceiling on this machine.
    """
    steps: list[CeilingStep] = []

    def attempt(rate: float) -> bool:
        result = run_load(replace(template, rate=rate, acked_ids_path=None))
        step = CeilingStep(rate, result.sustained(max_p99_ms=max_p99_ms), result)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        return step.sustained

    good, bad = 0.0, math.inf
    rate = start_rate
    while rate <= max_rate:
        if attempt(rate):
            good = rate
            rate *= growth
        else:
            bad = rate
            break
    if math.isfinite(bad):
        for _ in range(refine_steps):
            mid = round((good + bad) / 2, -1) if good else bad / 2
            if mid in (good, bad) or mid <= 0:
                break
            if attempt(mid):
                good = mid
            else:
                bad = mid
    return good, steps
