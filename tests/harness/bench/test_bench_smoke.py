"""Smoke runs of ``bench compare``, ``bench isolation`` and ``bench max`` at tiny scale.

They prove the commands run end to end against the real stack and write JSON + Markdown + PNG, with
acknowledged == stored; they never assert anything about speed (figures on a shared CI machine mean
nothing). One set of services is shared by the three runs to keep the suite short: its own ports,
its own database and its own Redis database, so nothing else on the stack is touched.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

from barcode_harness.bench.compare import run_compare
from barcode_harness.bench.docs import build_docs
from barcode_harness.bench.env import BenchEnv, BenchRun, bench_settings
from barcode_harness.bench.hostile import run_hostile
from barcode_harness.bench.isolation import run_isolation
from barcode_harness.bench.maxrate import run_max
from barcode_harness.bench.report import md_table, new_results_dir
from barcode_harness.bench.specs import HOSTILE_QUICK, CompareSpec, IsolationSpec, MaxSpec, TableSizeSpec
from barcode_harness.bench.tablesize import run_table_size, write_section
from barcode_pipeline.cli import app
from barcode_pipeline.config import Settings
from tests.kafka_helpers import start_group_at_log_end

pytestmark = pytest.mark.integration

TEST_DB = "bp_test_bench"
REDIS_DB = 13


def _redis_db(url: str, index: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{index}"))


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Iterator[BenchEnv]:
    base = stack_settings.updated(
        {
            "ingest_port": 18181,
            "legacy_port": 18180,
            "redis_url": _redis_db(stack_settings.redis.url, REDIS_DB),
            "ingest_processes": 1,
            "processor_group": "test-bench-smoke",  # never share partitions with another suite's pipeline
        }
    )
    settings = bench_settings(base, TEST_DB, fresh=True)
    start_group_at_log_end(settings, settings.processor.group)
    logs = tmp_path_factory.mktemp("bench-services") / "services.log"
    with BenchEnv(settings, logs, start_stack=False, fresh_db=True) as env:
        yield env


def _files(folder: Path, command: str) -> dict[str, object]:
    assert (folder / f"{command}.md").read_text().startswith("# Benchmark")
    assert list(folder.glob(f"{command}-*.png")), "no chart written"
    data: dict[str, object] = json.loads((folder / f"{command}.json").read_text())
    env = data["environment"]
    assert isinstance(env, dict)
    assert env["machine"]["cores"] and env["versions"]["servers"]["database"]
    assert "shared its" in env["shared_cores"]
    assert env["cpu_during_run"]["busy_pct"] > 0
    return data


def test_compare_smoke(bench_env: BenchEnv, tmp_path: Path) -> None:
    spec = CompareSpec(
        rate=40, duration_s=1.5, rounds=1, high_rate=150, high_duration_s=1.5, sweep_delays_ms=(0, 100),
        sweep_duration_s=1.0, idle_s=0.3, settle_s=0.1, warmup_s=0.5, kafka_probe_s=1.0, commit_probe=30,
        preset="smoke",
    )  # fmt: skip
    folder = new_results_dir(tmp_path, "compare")
    result = run_compare(spec, BenchRun(bench_env.settings, folder, shared=bench_env))
    data = _files(folder, "compare")
    assert data["database_server"] == result["database_server"]
    for path in ("legacy", "async"):
        combined = result["paths"][path]
        assert combined["acknowledged"] > 0
        assert combined["stored"] == combined["acknowledged"]
        assert combined["duplicate_rows"] == 0
        assert "Innodb_log_writes" in combined["io"]["deltas"]
    assert [s["worker_max_delay_ms"] for s in result["sweep"]] == [0, 100]
    assert result["kafka_produce"]["sent"] > 0
    assert {t["name"] for t in result["targets"]} >= {"avg latency legacy ÷ async at the compare load"}
    assert (folder / "compare-batching.png").exists()


def test_isolation_smoke(bench_env: BenchEnv, tmp_path: Path) -> None:
    spec = IsolationSpec(
        rate=40, baseline_s=1.5, contention_s=2.5, recovery_s=2.5, lockers=2, hold_s=0.5, warmup_s=0.5,
        timeout_s=5.0, preset="smoke",
    )  # fmt: skip
    folder = new_results_dir(tmp_path, "isolation")
    result = run_isolation(spec, BenchRun(bench_env.settings, folder, shared=bench_env))
    _files(folder, "isolation")
    assert result["contention"]["transactions"] > 0
    assert set(result["windows"]) == {"baseline", "contention", "recovery"}
    for check in result["verification"].values():
        assert check["acknowledged"] > 0
        assert check["missing"] == 0 and check["duplicate_rows"] == 0
    assert result["backlog"]["series"]["t"], "no backlog samples"


def test_max_smoke(bench_env: BenchEnv, tmp_path: Path) -> None:
    spec = MaxSpec(
        paths=("legacy-single", "async-batch"), step_s=1.0, batch_size=20, start_single=50, start_batch=400,
        growth=2.0, refine_steps=0, max_steps=2, warmup_s=0.5, kafka_probe_s=1.0, insert_rows=2000,
        preset="smoke",
    )  # fmt: skip
    folder = new_results_dir(tmp_path, "max")
    result = run_max(spec, BenchRun(bench_env.settings, folder, shared=bench_env))
    _files(folder, "max")
    assert result["ceilings"]["bare_insert"]["stored"] == result["ceilings"]["bare_insert"]["rows"]
    assert result["ceilings"]["kafka_produce_throughput"]["confirmed"] > 0
    for path in spec.paths:
        steps = result["paths"][path]["steps"]
        assert 1 <= len(steps) <= 2
        assert all(s["lost"] == 0 and s["duplicates"] == 0 for s in steps)
        # CPU per scan by stage: the stages of the path used CPU, and the figure follows from the cores
        step = steps[0]
        assert step["cpu_us_per_scan"], step["cpu_cores"]
        for stage, us in step["cpu_us_per_scan"].items():
            assert us == round(step["cpu_cores"][stage] / step["scans_per_s"] * 1e6, 1)
    assert "## CPU per scan, by stage" in (folder / "max.md").read_text()
    # the docs page is assembled from the latest results, charts copied next to it
    doc = tmp_path / "docs" / "benchmarks.md"
    used = build_docs(tmp_path, doc, tmp_path / "docs" / "img")
    assert set(used) == {"max"}
    text = doc.read_text()
    assert "](img/max-rates.png)" in text and (tmp_path / "docs" / "img" / "max-rates.png").exists()


def test_table_size_smoke(bench_env: BenchEnv, tmp_path: Path) -> None:
    """Two tiny searches around a fill: the table grew by the fill, and nothing was lost either time."""
    search = MaxSpec(
        paths=("async-batch",), step_s=1.0, batch_size=20, start_batch=400, growth=2.0, refine_steps=0,
        max_steps=1, warmup_s=0.0, kafka_probe_s=1.0, insert_rows=1000, preset="smoke",
    )  # fmt: skip
    spec = TableSizeSpec(rows=20_000, days=3, search=search, preset="smoke")
    folder = new_results_dir(tmp_path, "table-size")
    result = run_table_size(spec, BenchRun(bench_env.settings, folder, shared=bench_env))
    empty, filled = result["empty"], result["filled"]
    assert filled["table"]["rows"] >= empty["table"]["rows"] + 20_000
    assert empty["max_sustained_scans_per_s"] > 0 and filled["max_sustained_scans_per_s"] > 0
    for side in ("empty", "filled"):
        steps = json.loads((folder / side / "max.json").read_text())["paths"]["async-batch"]["steps"]
        assert all(s["lost"] == 0 and s["duplicates"] == 0 and s["stored"] > 0 for s in steps)
    text = (folder / "table-size.md").read_text()
    assert "| filled | " in text and "Filled ÷ empty" in text
    # the command writes its own section of the page, and a rebuild of the page keeps it
    doc = write_section(tmp_path / "docs" / "benchmarks.md", text)
    build_docs(tmp_path / "no-results", doc, tmp_path / "docs" / "img")
    assert text.strip() in doc.read_text()


def test_hostile_smoke(bench_env: BenchEnv, tmp_path: Path) -> None:
    """A short attack: the keyed scans are all answered and stored once, the attacker's oversized heads
    and invalid keys were refused, and the report shows where the cores went in each phase."""
    spec = dataclasses.replace(HOSTILE_QUICK, duration_s=4.0, slow_connections=100, warmup_s=1.0,
                               warmup_round_s=1.0, invalid_key_rate=100.0)  # fmt: skip
    folder = new_results_dir(tmp_path, "hostile")
    result = run_hostile(spec, BenchRun(bench_env.settings, folder, shared=bench_env))
    targets = {t["name"].split(" (")[0]: t for t in result["targets"]}
    assert targets["keyed requests not answered 2xx, alone and under attack"]["met"]
    assert targets["acknowledged keyed scans missing or stored twice"]["met"]
    assert result["attack_answers"].get("431", 0) >= 1 and result["attack_answers"].get("401", 0) >= 1
    assert result["cores"]["attacked"]["attacker"] > 0 and result["alone"]["seconds"]
    assert "| attacker | 0.00 |" in (folder / "hostile.md").read_text()


def test_cli_lists_bench_commands() -> None:
    out = CliRunner().invoke(app, ["bench", "--help"])
    assert out.exit_code == 0
    for command in (
        "compare",
        "isolation",
        "max",
        "table-size",
        "auth",
        "soak",
        "plan",
        "hostile",
        "docs",
        "linger",
    ):
        assert command in out.output


def test_md_table_formats_cells() -> None:
    table = md_table(("a", "b"), [[1.23456, None], [float("inf"), "x|y"], [12345.6, float("nan")]])
    assert table.splitlines()[2:] == ["| 1.23 | – |", "| ∞ | x\\|y |", "| 12,346 | – |"]
