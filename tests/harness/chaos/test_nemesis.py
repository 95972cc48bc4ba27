"""One short nemesis iteration at CI scale on the private stack: overlapping faults, the full ledger."""

from __future__ import annotations

import pytest

from barcode_harness.chaos.harness import ChaosEnv
from barcode_harness.chaos.nemesis import run_iterations
from barcode_harness.chaos.schedule import ScheduleSpec, draw, overlaps, targets_for

from .conftest import CI_PARAMS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Seed 73 over 15 s with Redis fillable (as the long runs are): Redis full, pauses of worker-1 and
# the processor, kills of Redis and Kafka, several of them overlapping.
SEED = 73
SPEC = ScheduleSpec(duration_s=15.0, fills=("redis",))


def test_the_ci_schedule_is_the_intended_one() -> None:
    faults = draw(SEED, targets_for(2, SPEC), SPEC)
    assert {f.target for f in faults} >= {"processor", "worker-1", "redis", "kafka"}
    assert {f.kind for f in faults} >= {"kill", "pause", "full"}
    assert overlaps(faults)


def test_nemesis_iteration(chaos_pipeline: ChaosEnv) -> None:
    (run,) = run_iterations(chaos_pipeline.settings, [SEED], CI_PARAMS, chaos_pipeline.workdir, spec=SPEC,
                            env=chaos_pipeline)  # fmt: skip
    result = run.result
    report = "\n".join(
        [f"{c.name}: {c.detail}" for c in result.failures] + [f"step: {line}" for line in run.stats.done]
    )
    assert result.error is None, f"did not run to completion: {result.error}\n{report}"
    # every fault was carried out and healed (not merely logged: a skipped one counts against it)
    assert run.stats.skipped == [], report
    assert run.stats.applied == len(run.stats.faults), report
    assert result.acknowledged > 0, report
    assert result.lost == 0, f"{result.lost} acknowledged scans lost\n{report}"
    assert result.duplicates == 0, f"{result.duplicates} duplicate rows\n{report}"
    assert run.stats.last_heal_to_drained_s is not None, report
    assert result.ok, f"failed its checks:\n{report}"
