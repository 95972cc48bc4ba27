"""``bench vegeta``'s plumbing: targets of unique valid scans, and real vegeta runs read back correctly."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from barcode_harness.bench.trivial_server import TrivialServerProcess
from barcode_harness.bench.vegeta import (
    acknowledged_ids,
    attack,
    floors_section,
    latency_targets,
    summary,
    vegeta_binary,
    vegeta_report,
    vegeta_version,
    write_targets,
)
from barcode_pipeline import names
from barcode_pipeline.domain import ScanRules, parse_scan


def test_targets_are_unique_valid_scans_with_the_given_headers(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    write_targets(path, "http://127.0.0.1:1/ingest/barcode", 50, "0a1b2c3d", {"X-API-Key": "k"})
    targets = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    scans = [parse_scan(orjson.loads(base64.b64decode(t["body"])), ScanRules()) for t in targets]
    assert len({s.scan_id for s in scans}) == 50
    assert all(t["method"] == "POST" and t["header"]["X-API-Key"] == ["k"] for t in targets)


def test_a_real_vegeta_run_is_reported_and_its_acknowledged_scans_are_read_back(tmp_path: Path) -> None:
    """vegeta is installed by the project's setup; a missing binary fails here, it does not skip."""
    binary = vegeta_binary()
    assert vegeta_version(binary) != "unknown"
    targets, results = tmp_path / "targets.json", tmp_path / "results.bin"
    with TrivialServerProcess() as server:
        write_targets(targets, server.url + names.ROUTE_SCAN, 30, "00ff00ff", {})
        attack(binary, targets, rate=30, duration_s=1, timeout_s=5, results=results)
    figures = summary(vegeta_report(binary, results))
    assert figures["requests"] == 30 and figures["status_codes"] == {"202": 30}
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    sent = {
        orjson.loads(base64.b64decode(orjson.loads(line)["body"]))["scanId"]
        for line in targets.read_bytes().splitlines()
    }
    assert set(acknowledged_ids(binary, results)) == sent


def _run(rate: float, p50: float, p99: float, label: str | None = None) -> dict[str, object]:
    return {"label": label or f"{rate:g}", "target_rate": rate, "p50_ms": p50, "p99_ms": p99}


def test_the_latency_goals_are_judged_from_the_runs_and_the_floors_of_the_same_run() -> None:
    runs = [_run(100, 9.0, 9.0, "warm-up"), _run(100, 1.2, 3.0), _run(2000, 1.0, 4.9), _run(3000, 2.0, 16.0)]
    floors = [
        {"rate": 100.0, "http": {"p50_ms": 0.4, "p99_ms": 0.8}, "produce": {"p50_ms": 0.75, "p99_ms": 1}}
    ]
    goals = {t.name: t for t in latency_targets(runs, floors)}
    assert goals["single-scan p99 at 2,000 req/s"].met is True
    assert goals["single-scan p99 at 3,000 req/s"].met is False
    gap = goals["single-scan p50 at 100 req/s minus the bare produce p50"]
    assert gap.met is True and gap.measured == "0.45 ms"  # the warm-up run is not the 100 req/s run
    table = floors_section({"runs": runs, "floors": floors}, {"floor_s": 10})
    assert "| 100 | 1.20 / 3.00 | 0.40 / 0.80 | 0.75 / 1.00 | 0.05 |" in table
    unmeasured = {t.name: t for t in latency_targets(runs[:2], [])}
    assert unmeasured["single-scan p99 at 2,000 req/s"].met is None
