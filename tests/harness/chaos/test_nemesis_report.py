"""The nemesis section of docs/reliability.md: rendered from the runs, kept by `chaos all`."""

from __future__ import annotations

from pathlib import Path

from barcode_harness import sections
from barcode_harness.chaos.checks import Check
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ScenarioResult
from barcode_harness.chaos.nemesis import NemesisRun, NemesisStats
from barcode_harness.chaos.report import RunInfo, write_nemesis_section, write_report
from barcode_harness.chaos.schedule import ScheduleSpec, draw, targets_for

BEGIN, END = sections.NEMESIS


def _run(seed: int, *, ok: bool = True) -> NemesisRun:
    faults = draw(seed, targets_for(2))
    stats = NemesisStats(seed, faults, 3, done=["t+  1.0s SIGKILL redis"], last_heal_to_drained_s=2.5)
    result = ScenarioResult(key="N", name="nemesis", title=f"Nemesis seed {seed}", fault="x")
    result.acknowledged = result.stored = 900
    result.checks = [Check("no scan stored twice", ok, "0" if ok else "2 extra rows")]
    return NemesisRun(stats, result)


def _info() -> RunInfo:
    command = "barcode-pipeline chaos nemesis --seed 1 --iterations 2"
    return RunInfo(command, ChaosParams(), spec=ScheduleSpec())


def test_section_lists_every_seed_and_the_failures(tmp_path: Path) -> None:
    path = write_nemesis_section(tmp_path / "reliability.md", [_run(1), _run(2, ok=False)], _info())
    text = path.read_text()
    section = sections.extract(text, sections.NEMESIS)
    assert section is not None and section.startswith(BEGIN) and section.rstrip().endswith(END)
    assert "**1 of 2 iterations passed**" in section
    rows = [line for line in section.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 2 and "**FAIL**" in rows[1]
    assert "Seed 2:" in section and "2 extra rows" in section and "SIGKILL redis" in section
    assert "--seed <seed>" in section


def test_rewriting_the_section_replaces_it_in_place() -> None:
    doc = "# Title\n\nbefore\n\n" + BEGIN + "\nold\n" + END + "\n\nafter\n"
    merged = sections.put(doc, BEGIN + "\nnew\n" + END + "\n", sections.NEMESIS)
    assert "old" not in merged and "new" in merged
    assert merged.index("before") < merged.index("new") < merged.index("after")


def test_chaos_all_keeps_the_nemesis_section(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    write_nemesis_section(path, [_run(5)], _info())
    write_report(path, [], RunInfo("barcode-pipeline chaos all", ChaosParams()))
    text = path.read_text()
    assert text.startswith("# Reliability")
    assert sections.extract(text, sections.NEMESIS) is not None and "| 5 |" in text
    assert text.count(BEGIN) == 1


def test_chaos_all_keeps_both_owned_sections_and_each_writer_only_its_own(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    write_nemesis_section(path, [_run(5)], _info())
    sections.write(path, sections.HA[0] + "\nha results\n" + sections.HA[1] + "\n", sections.HA)
    write_report(path, [], RunInfo("barcode-pipeline chaos all", ChaosParams()))
    write_nemesis_section(path, [_run(6)], _info())  # a later nemesis run replaces only its own section
    text = path.read_text()
    assert text.startswith("# Reliability") and "ha results" in text and "| 6 |" in text
    assert text.count(sections.HA[0]) == 1 and text.count(BEGIN) == 1


def test_a_long_schedule_keeps_its_own_section_beside_the_series(tmp_path: Path) -> None:
    path = tmp_path / "reliability.md"
    write_nemesis_section(path, [_run(5)], _info())
    long = ScheduleSpec(duration_s=1800, mean_gap_s=20, fills=("redis", "disk"))
    write_nemesis_section(
        path,
        [_run(7)],
        RunInfo("barcode-pipeline chaos nemesis --duration 1800", ChaosParams(), spec=long),
    )
    write_report(path, [], RunInfo("barcode-pipeline chaos all", ChaosParams()))
    text = path.read_text()
    short, kept = sections.extract(text, sections.NEMESIS), sections.extract(text, sections.LONG_NEMESIS)
    assert short is not None and "| 5 |" in short and "| 7 |" not in short
    assert kept is not None and "| 7 |" in kept and "(a long schedule)" in kept and "| full |" in kept
