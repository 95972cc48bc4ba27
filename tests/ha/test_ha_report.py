"""The ha section of docs/reliability.md replaces only itself."""

from __future__ import annotations

from pathlib import Path

from barcode_harness import sections
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ScenarioResult
from barcode_harness.chaos.report import RunInfo, render_ha_section

BEGIN, END = sections.HA


def _section(lost: int) -> str:
    metrics = {"failover_s": 3.2, "rewound": 7}
    result = ScenarioResult("h6", "ha-redis-primary-kill", "t", "SIGKILL of the primary",
                            acknowledged=10, stored=10 - lost, lost=lost, metrics=metrics)  # fmt: skip
    info = RunInfo(command="barcode-pipeline chaos --profile ha all", params=ChaosParams())
    return render_ha_section([("WAIT on", [result])], info)


def test_the_section_is_appended_then_replaced_in_place(tmp_path: Path) -> None:
    doc = tmp_path / "reliability.md"
    doc.write_text("# Reliability\n\nsingle-node results\n")
    sections.write(doc, _section(lost=0), sections.HA)
    sections.write(doc, _section(lost=1), sections.HA)
    text = doc.read_text()
    assert text.startswith("# Reliability\n\nsingle-node results\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    row = next(line for line in text.splitlines() if line.startswith("| h6 "))
    assert "| 10 | 9 | 1 | 0 | 3.2 |" in row and "| 7 |" in row
    assert "two of the three brokers" in text
