"""Every fault scenario at CI scale, on the private stack: no acknowledged scan lost, none stored twice.

Same scenarios and checks as ``barcode-pipeline chaos all``; only the holds are shorter (see
``CI_PARAMS``). One pipeline serves the whole module; each scenario starts from a drained pipeline
with every server and service back up, so a failure in one does not cascade into the next.
"""

from __future__ import annotations

import pytest

from barcode_harness.chaos.harness import ChaosEnv, run_scenario
from barcode_harness.chaos.scenarios import select

from .conftest import CI_PARAMS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TAKEOVER_SCENARIOS = {
    "worker-kill",
    "workers-kill-all",
    "worker-crash-after-commit",
    "worker-crash-before-commit",
}


@pytest.mark.parametrize("name", [info.name for info in select(["all"])])
def test_scenario(chaos_pipeline: ChaosEnv, name: str) -> None:
    (scenario,) = select([name])
    result = run_scenario(chaos_pipeline, scenario, CI_PARAMS)
    report = "\n".join(
        [f"{c.name}: {c.detail}" for c in result.failures] + [f"note: {n}" for n in result.notes]
    )
    assert result.error is None, f"{name} did not run to completion: {result.error}\n{report}"
    assert result.acknowledged > 0, report
    assert result.lost == 0, f"{result.lost} acknowledged scans lost\n{report}"
    assert result.duplicates == 0, f"{result.duplicates} duplicate rows\n{report}"
    if name in TAKEOVER_SCENARIOS:
        assert result.takeover_s is not None, f"no takeover time measured\n{report}"
    assert result.ok, f"{name} failed its checks:\n{report}"
