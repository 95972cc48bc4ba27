"""``bench replication``'s section: both profiles side by side, kept when ``bench docs`` rebuilds the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from barcode_harness.bench.docs import build_docs
from barcode_harness.bench.replication import SECTION, markdown, write_section
from barcode_harness.bench.specs import ReplicationSpec


def _profile(name: str, p50: float, best: float, rf: int) -> dict[str, Any]:
    lat = {"p50_ms": p50, "p99_ms": p50 * 4, "p999_ms": p50 * 9}
    return {
        "profile": name,
        "environment": {"machine": {"cores": 2}},
        "replicas": {"replication_factor": rf, "min_in_sync": rf},
        "redis_wait_replicas": rf - 1,
        "kafka_produce": {"latency_ms": lat},
        "ingest_latency": {"latency_ms": {k: v * 2 for k, v in lat.items()}},
        "max_sustained_scans_per_s": best,
        "saturated_stage": "processor",
    }


def _result() -> dict[str, Any]:
    spec = ReplicationSpec().to_dict()
    return {"spec": spec, "duration_s": 300.0,
            "profiles": [_profile("single", 1.0, 4000.0, 1), _profile("ha", 2.5, 2000.0, 3)]}  # fmt: skip


def test_the_section_puts_both_profiles_side_by_side_and_says_the_machine_was_shared() -> None:
    text = markdown(_result())
    assert text.startswith(SECTION[0]) and text.rstrip().endswith(SECTION[1])
    assert "| bare Kafka produce, acks=all (ms), p50 | 1.00 | 2.50 | 2.50 |" in text
    assert "| end-to-end maximum sustained rate, batches of 100 (scans/s) | 4,000 | 2,000 | 0.50 |" in text
    assert "load average at start" in text
    assert "RF=3" in text


def test_bench_docs_keeps_the_replication_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    write_section(doc, markdown(_result()))
    write_section(doc, markdown(_result()))  # replaced, not appended twice
    assert doc.read_text().count(SECTION[0]) == 1
    build_docs(tmp_path / "no-results", doc, tmp_path / "img")
    rebuilt = doc.read_text()
    assert rebuilt.count(SECTION[0]) == 1 and "| 4,000 | 2,000 |" in rebuilt
    assert "No results yet: run `barcode-pipeline bench compare`" in rebuilt
