"""The capacity plan: sizes at a rate from the settings and the measured bytes, what fills first,
the settings that would fit, and the generated section of docs/capacity.md kept in step."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from barcode_harness import sections
from barcode_harness.bench import capacityplan
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.cli import app
from barcode_pipeline.ops import capacity

GIB = capacity.GIB
ROOMY = capacity.Bounds(4 * GIB, 1024 * GIB, 1024 * GIB, 10_000 * GIB)
DOC = Path(__file__).resolve().parents[2] / "docs" / "capacity.md"


def by_store(lines: list[capacity.Line]) -> dict[str, capacity.Line]:
    return {line.store.split(" (")[0]: line for line in lines}


def test_sizes_follow_rate_settings_and_measured_bytes() -> None:
    settings = HarnessSettings(db_retention_days=90)
    lines = by_store(capacity.plan(settings, 1000, ROOMY))
    db = lines["database disk"]
    assert db.per_day == pytest.approx(1000 * 86_400 * 263)
    assert db.steady == pytest.approx(db.per_day * 91)  # the day being dropped is still there
    # markers for the window and a minute, streams for their retention, the DLQ at its bound
    redis = lines["Redis memory"]
    markers = capacity.marker_bytes_per_s(1000, settings)
    assert markers == pytest.approx(1000 * 18.4 + 1024 / 60 * 176)
    assert redis.steady == pytest.approx(markers * 86_460 + 1000 * 300 * 219 + 1_000_000 * 257)
    assert 1.9 * GIB < redis.steady < 2.1 * GIB  # issue 26's bound at 1,000 scans/s: 3 GiB
    kafka = lines["Kafka disk"]
    assert kafka.steady == pytest.approx(1000 * 86_400 * 192 * 7 + 6 * GIB)
    twice = by_store(capacity.plan(settings.updated({"topic_replication": 2}), 1000, ROOMY))
    assert twice["Kafka disk"].per_day == pytest.approx(2 * kafka.per_day)


def test_what_fills_first_and_the_settings_that_would_fit() -> None:
    settings = HarnessSettings(db_retention_days=90)
    small = capacity.Bounds(4 * GIB, 1024 * GIB, 1024 * GIB, 1024 * GIB)
    lines = capacity.plan(settings, 1000, small)
    first = capacity.fills_first(lines)
    assert first is not None and first.store == "database disk"
    assert first.fills_in_days == pytest.approx(1024 * GIB / first.per_day)
    assert "BP_DB_RETENTION_DAYS <= 47 " in first.change  # 48 days of rows fit; one more is kept
    assert capacity.summary(lines).startswith("fills first: database disk, in 48.4 days")
    assert capacity.fills_first(capacity.plan(settings, 100, small)) is None
    # too fast for any retention that keeps what ingest accepts: only a bigger disk helps
    fast = by_store(capacity.plan(settings, 5000, small))
    assert (
        fast["database disk"].change.startswith("a disk of >= ")
        and "BP_SCAN_MAX_AGE_DAYS" in fast["database disk"].change
    )
    assert (
        fast["Redis memory"].fills_in_days is not None
        and "BP_DEDUP_WINDOW_S <= " in fast["Redis memory"].change
    )


def test_cli_prints_the_plan_and_refuses_a_rate_of_zero() -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["capacity", "--rate", "1000", "--redis-memory", "4", "--disk", "1024", "--json"]
    )
    assert result.exit_code == 0, result.output
    plans = orjson.loads(result.output)
    assert plans[0]["rate"] == 1000 and plans[0]["summary"].startswith("fills first: database disk")
    text = runner.invoke(app, ["capacity", "--rate", "100", "--redis-memory", "4", "--disk", "1024"])
    assert text.exit_code == 0 and "nothing fills" in text.output and "BP_DB_RETENTION_DAYS" in text.output
    refused = runner.invoke(app, ["capacity", "--rate", "0"])
    assert refused.exit_code == 2 and "--rate" in refused.output


def test_the_docs_show_the_plan_this_code_prints() -> None:
    """docs/capacity.md's plan section is what `bench plan` writes now: rerun it after a change."""
    shown = sections.extract(DOC.read_text(), capacityplan.SECTION)
    assert shown == capacityplan.section(HarnessSettings()), (
        "docs/capacity.md is stale: run `barcode-pipeline bench plan`"
    )


def test_the_cpu_plan_adds_each_tier_s_measured_cost_with_headroom() -> None:
    ha = HarnessSettings(topic_replication=3)
    tiers = {c.tier.split(" (")[0]: c for c in capacity.cpu_plan(ha, 20_000, host_cores=8)}
    app = tiers["app hosts"]
    single, batch = capacity.CPU_SINGLE, capacity.CPU_BATCH
    assert app.us_per_scan == pytest.approx(single.ingest + single.processor + single.workers)
    assert app.cores == pytest.approx(20_000 * app.us_per_scan / 1e6 / 0.7)
    assert app.hosts == max(2, math.ceil(app.cores / 8))
    assert (
        tiers["Kafka brokers"].us_per_scan == pytest.approx(3 * single.kafka)
        and tiers["Kafka brokers"].hosts >= 3
    )
    assert tiers["Redis"].note == "within one core"
    far = {c.tier.split(" (")[0]: c for c in capacity.cpu_plan(ha, 80_000, host_cores=8)}
    assert far["app hosts"].hosts == math.ceil(far["app hosts"].cores / 8) > app.hosts
    assert "PAST ONE CORE" in far["Redis"].note  # Redis is single-threaded
    batched = {c.tier.split(" (")[0]: c for c in capacity.cpu_plan(ha, 20_000, batch_share=1.0)}
    assert batched["app hosts"].us_per_scan == pytest.approx(batch.ingest + batch.processor + batch.workers)
