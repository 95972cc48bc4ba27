"""deploy/prometheus checked by Debian's promtool: config, rules, and a unit test per alert.

promtool comes from scripts/setup.sh (apt ``prometheus``); without it these tests fail, never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from barcode_pipeline.config import Settings
from barcode_pipeline.monitoring import promconfig
from barcode_pipeline.monitoring.targets import exporter_targets, pipeline_targets

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: run scripts/setup.sh (apt-get install prometheus)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def test_template_config_is_valid() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", *(str(p) for p in sorted((DEPLOY / "rules").glob("*.yml"))))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(DEPLOY / "tests" / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same case with the opposite expectation is rejected."""
    tests: Any = yaml.safe_load((DEPLOY / "tests" / "alerts_test.yml").read_text())
    case = next(t for t in tests["tests"] if t["name"] == "redis down fires")
    case["alert_rule_test"][0]["exp_alerts"] = []
    tests["tests"] = [case]
    tests["rule_files"] = [str(DEPLOY / "rules" / name) for name in promconfig.RULE_FILES]
    broken = tmp_path / "broken_test.yml"
    broken.write_text(yaml.safe_dump(tests))
    assert promtool("test", "rules", str(broken)).returncode != 0


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules: Any = yaml.safe_load((DEPLOY / "rules" / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests: Any = yaml.safe_load((DEPLOY / "tests" / "alerts_test.yml").read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert len(alerts) >= 10
    assert alerts - fires == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"
    assert (fires | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_rendered_config_is_valid_and_applies_the_slo(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, freshness_slo_s=2.5, workers=3, processors=2)
    config = promconfig.write_all(settings, tmp_path / "prometheus")
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = (tmp_path / "prometheus" / "rules" / "alerts.yml").read_text()
    assert "bp:worker_freshness_seconds:p99_5m > 2.5" in alerts
    data: Any = yaml.safe_load(config.read_text())
    scraped = {t for job in data["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {t.address for t in pipeline_targets(settings) + exporter_targets(settings)} <= scraped
    workers = next(j for j in data["scrape_configs"] if j["job_name"] == "bp-worker")
    services = [sc["labels"]["service"] for sc in workers["static_configs"]]
    assert services == ["worker-1", "worker-2", "worker-3"]


def test_template_matches_the_default_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """The template users copy lists exactly the default settings' endpoints."""
    import os

    for name in list(os.environ):
        if name.startswith("BP_"):
            monkeypatch.delenv(name)
    defaults = Settings()
    data: Any = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    template = {
        (job["job_name"], sc["labels"]["service"], target)
        for job in data["scrape_configs"]
        for sc in job["static_configs"]
        for target in sc["targets"]
    }
    expected = {(t.job, t.name, t.address) for t in pipeline_targets(defaults) + exporter_targets(defaults)}
    assert template == expected
