"""``bench linger`` on the suite's stack: a linger batches one partition's scans, none batches nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from barcode_harness.bench.ceilings import drop_probe_topic, ensure_topic
from barcode_harness.bench.lingercost import run_linger
from barcode_harness.bench.specs import LingerSpec
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.errors import DeliveryError

pytestmark = pytest.mark.integration


def test_linger_smoke(stack_settings: HarnessSettings, tmp_path: Path) -> None:
    spec = LingerSpec(rate=500.0, lingers_ms=(0.0, 10.0), duration_s=2.0, rounds=1, warmup_s=0.5)
    result = run_linger(stack_settings, spec, tmp_path, start_stack=False)
    cells = {(c["layout"], c["linger_ms"]): c for c in result["cells"]}
    assert len(cells) == 4
    one_idle, one_lingering = cells[("one partition", 0.0)], cells[("one partition", 10.0)]
    # 500 scans/s for 10 ms is 5 scans a partition; with no linger a scan seldom finds another waiting.
    assert one_lingering["scans_per_request"] >= 2, one_lingering
    assert one_idle["scans_per_request"] < 1.5, one_idle
    assert all(c["failed"] == 0 and c["broker_us_per_scan"] > 0 for c in cells.values()), cells
    assert "scans a produce request" in (tmp_path / "linger.md").read_text()
    assert json.loads((tmp_path / "linger.json").read_text())["runs"][0]["sent"] == 1000


def test_a_bench_topic_left_with_other_partitions_is_refused(stack_settings: HarnessSettings) -> None:
    """A leftover topic is reused only with the partition count the run would label its figures with."""
    topic = "bench.partitions-check"
    try:
        ensure_topic(stack_settings, topic, 1)
        ensure_topic(stack_settings, topic, 1)  # as it is: reused
        with pytest.raises(DeliveryError, match="has 1 partitions, this run needs 2"):
            ensure_topic(stack_settings, topic, 2)
    finally:
        drop_probe_topic(stack_settings, (topic,))
