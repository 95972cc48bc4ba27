"""``bench vegeta``'s plumbing: targets of unique valid scans, and real vegeta runs read back correctly."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from barcode_harness.bench.trivial_server import trivial_server_thread
from barcode_harness.bench.vegeta import (
    acknowledged_ids,
    attack,
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
    with trivial_server_thread() as url:
        write_targets(targets, url + names.ROUTE_SCAN, 30, "00ff00ff", {})
        attack(binary, targets, rate=30, duration_s=1, timeout_s=5, results=results)
    figures = summary(vegeta_report(binary, results))
    assert figures["requests"] == 30 and figures["status_codes"] == {"202": 30}
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    sent = {
        orjson.loads(base64.b64decode(orjson.loads(line)["body"]))["scanId"]
        for line in targets.read_bytes().splitlines()
    }
    assert set(acknowledged_ids(binary, results)) == sent
