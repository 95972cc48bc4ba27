"""The bench environment: CPU steal and busy share over a run (they move every figure at once)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from barcode_harness.bench import report
from barcode_harness.settings import HarnessSettings


def test_cpu_counters_read_this_machine() -> None:
    counters = report.cpu_counters()
    assert counters is not None  # /proc/stat exists on every machine this project runs on
    steal, idle, total = counters
    assert 0 <= steal <= total and 0 <= idle <= total


def test_cpu_since_reports_shares_of_the_elapsed_cpu_time() -> None:
    start = report.cpu_counters()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # keep one core busy so the busy share cannot be 0
        pass
    cpu = report.cpu_since(start)
    assert cpu is not None
    assert 0 < cpu["busy_pct"] <= 100
    assert 0 <= cpu["steal_pct"] <= 100


def test_cpu_since_without_a_start_is_unknown() -> None:
    assert report.cpu_since(None) is None


def test_finish_environment_replaces_the_start_snapshot_and_is_rendered() -> None:
    env: dict[str, Any] = {
        "cpu_at_start": (0, 0, 1),
        "machine": {"cores": 2, "usable_cores": 2, "memory_gb": 24, "cpu_model": "x", "os": "y",
                    "load_average_at_start": [0.1, 0.1, 0.1]},
        "versions": {"servers": {}, "libraries": {}, "python": "3", "barcode_pipeline": "0"},
        "settings": {}, "shared_cores": "shared.", "command": "c", "started_at": "t",
    }  # fmt: skip
    report.finish_environment(env)
    assert "cpu_at_start" not in env
    assert env["cpu_during_run"] is not None
    assert "stolen by the hypervisor" in report.md_environment(env)
    assert "\n- **Settings**: " in report.md_environment(env)  # the section's words, not a class name
    env["cpu_during_run"] = None
    assert "CPU during the run**: not recorded." in report.md_environment(env)


def test_only_the_newest_result_folders_are_kept(tmp_path: Path) -> None:
    for stamp in ("20261201-100000", "20261202-100000", "20261203-100000", "20261203-100000-2"):
        (tmp_path / stamp).mkdir()
    (tmp_path / "notes").mkdir()  # not a results folder: never touched
    gone = report.prune_results(tmp_path, 2)
    assert [p.name for p in gone] == ["20261201-100000", "20261202-100000"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261203-100000", "20261203-100000-2", "notes"]
    assert report.prune_results(tmp_path, 0) == []


def test_a_result_file_records_no_secret() -> None:
    """Every secret setting is masked in what a result file records, a URL's password included."""
    settings = HarnessSettings(
        db_url="mysql://bench:dbsecret@127.0.0.1:3307/b",
        worker_redis_url="redis://worker:redissecret@127.0.0.1:6390/0",
        kafka_sasl_password="saslsecret",
        ingest_api_key="keysecret",
    )
    shown = report.shown_settings(settings)
    text = str(shown)
    for secret in ("dbsecret", "redissecret", "saslsecret", "keysecret"):
        assert secret not in text
    assert shown["db_url"] == "mysql://bench:***@127.0.0.1:3307/b"
    assert shown["kafka_sasl_password"] == "***"
    assert shown["redis_sentinel_password"] == ""
