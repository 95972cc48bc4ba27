"""Unit tests of the chaos command's plumbing: scenario selection, the report, the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from barcode_harness.chaos import commands
from barcode_harness.chaos.checks import Check
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ScenarioResult
from barcode_harness.chaos.report import RunInfo, render, write_report
from barcode_harness.chaos.scenarios import select
from barcode_pipeline.errors import ConfigError

SPEC_SCENARIOS = {
    "kafka-kill", "processor-kill", "redis-kill", "worker-kill", "workers-kill-all",
    "worker-crash-after-commit", "mariadb-kill", "duplicates", "poison", "redis-flush",
}  # fmt: skip


def _result(name: str, *, ok: bool = True, takeover: float | None = None) -> ScenarioResult:
    r = ScenarioResult(key="4", name=name, title=f"title of {name}", fault="SIGKILL | something")
    r.sent, r.acknowledged, r.stored, r.drain_s = 1200, 1000, 1000, 3.25
    r.takeover_s, r.reports_takeover = takeover, takeover is not None
    r.checks = [Check("every acknowledged scan is stored or dead-lettered", ok, "0 lost" if ok else "3 lost")]
    r.notes = ["worker-1 held 12 pending entries when killed"]
    return r


def test_registry_covers_the_specified_scenarios() -> None:
    names = [info.name for info in select(["all"])]
    assert set(names) >= SPEC_SCENARIOS
    assert len(names) == len(set(names))
    assert [s.name for s in select(["all"])] == names


def test_select_by_name_or_number_in_run_order() -> None:
    assert [s.name for s in select(["redis-flush", "1"])] == ["kafka-kill", "redis-flush"]
    first, second = select(["worker-kill"]), select(["worker-kill"])
    assert first[0] is not second[0]  # fresh objects: a scenario keeps state while it runs


def test_select_rejects_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        select(["no-such-fault"])


def test_report_has_a_row_per_scenario_settings_and_limits(tmp_path: Path) -> None:
    results = [_result("kafka-kill"), _result("worker-kill", takeover=4.2), _result("poison", ok=False)]
    settings = {"Redis appendfsync (setting)": "everysec"}
    info = RunInfo(
        "barcode-pipeline chaos all", ChaosParams(), settings=settings, machine={"CPU": "test cpu"}
    )
    text = write_report(tmp_path / "docs" / "reliability.md", results, info).read_text()
    assert "**2 of 3 scenarios passed**" in text
    rows = [line for line in text.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 3
    assert "SIGKILL \\| something" in rows[0]  # a pipe in a cell must not break the table
    assert "| 4.20 |" in rows[1] and "**FAIL**" in rows[2]
    assert "everysec" in text and "test cpu" in text
    assert "replication.factor=3" in text and "min.insync.replicas=2" in text and "Galera" in text
    assert "❌ every acknowledged scan is stored or dead-lettered: 3 lost" in text


def test_render_is_plain_markdown() -> None:
    text = render([_result("kafka-kill")], RunInfo(command="x", params=ChaosParams()))
    assert text.startswith("# Reliability")
    assert text.endswith("\n")


def _app() -> typer.Typer:
    app = typer.Typer()
    commands.register(app)

    @app.command()
    def other() -> None:  # a second command keeps `chaos` a sub-command, as in the real CLI
        """Placeholder."""

    return app


@pytest.mark.parametrize("ok", [True, False])
def test_exit_code_follows_the_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ok: bool) -> None:
    seen: dict[str, Any] = {}

    def fake_run(
        settings: Any, scenarios: Any, params: ChaosParams, workdir: Path, **kw: Any
    ) -> list[ScenarioResult]:
        seen["params"], seen["names"] = params, [s.name for s in scenarios]
        results = [_result(s.name, ok=ok) for s in scenarios]
        for r in results:
            kw["on_result"](r)
        return results

    monkeypatch.setattr("barcode_harness.chaos.harness.run_scenarios", fake_run)
    monkeypatch.setattr("barcode_harness.chaos.report.settings_info", lambda settings: {"k": "v"})
    report = tmp_path / "reliability.md"
    result = CliRunner().invoke(
        _app(),
        ["chaos", "kafka-kill", "poison", "--hold", "3", "--report", str(report), "--workdir", str(tmp_path)],
    )
    assert result.exit_code == (0 if ok else 1), result.output
    assert seen["names"] == ["kafka-kill", "poison"] and seen["params"].hold_s == 3
    assert "## Settings used\n\n| setting | value |\n|---|---|\n| k | v |" in report.read_text()
    assert ("FAIL" in result.output) is not ok


def test_help_warns_that_it_breaks_the_stack() -> None:
    result = CliRunner().invoke(_app(), ["chaos", "--help"])
    assert result.exit_code == 0
    assert "SIGKILL" in result.output and "disposable stack" in result.output
