"""The soak's judgements on synthetic series: slopes, a rewritten file's writes, memory and
descriptor growth, the tail's quarters, Redis's steady state; and the exact window histograms."""

from __future__ import annotations

import os

import pytest

from barcode_harness.bench import procstats
from barcode_harness.bench.histogram import LatencyHistogram, TimeSeries
from barcode_harness.bench.soak import (
    fds_keep_growing,
    judge,
    redis_steady_bytes,
    rss_growth,
    slope_per_s,
    tail_growth,
    written_per_s,
)
from barcode_harness.bench.soaksample import Sample
from barcode_harness.bench.specs import SOAK_QUICK as QUICK
from barcode_harness.bench.specs import SoakSpec


def sample(t: float, rss: int, fds: int) -> Sample:
    return Sample(t, {}, {"ingest": procstats.Resources(rss, fds, 4, 1)}, {})


def test_slope_and_the_writes_of_a_file_that_is_rewritten_smaller() -> None:
    assert slope_per_s([(0, 100.0), (10, 200.0), (20, 300.0)]) == pytest.approx(10.0)
    assert slope_per_s([(5, 1.0)]) == 0.0
    # grows 10 B/s, rewritten down to 50 at t=20, grows on: the rises are what was written
    aof = [(0, 100.0), (10, 200.0), (20, 50.0), (30, 150.0), (40, 250.0)]
    assert written_per_s(aof) == pytest.approx((100 + 100 + 100) / 40)


def test_memory_growth_is_judged_on_medians_and_a_step_in_descriptors_is_not_a_leak() -> None:
    flat = [sample(t, 100 + (t % 2), 50) for t in range(20)]
    assert rss_growth(flat, "ingest") == pytest.approx(0.0, abs=0.02)
    leaking = [sample(t, 100 + 2 * t, 50 + t) for t in range(20)]
    assert rss_growth(leaking, "ingest") == pytest.approx((136 - 102) / 102)
    assert fds_keep_growing(leaking, "ingest")
    step = [sample(t, 100, 50 if t < 7 else 60) for t in range(20)]  # a segment rolled once
    assert not fds_keep_growing(step, "ingest")
    # a server's peaks follow its clients' bursts of connections; its floor stays: no leak
    bursts = [sample(t, 100, 100 + (t * 40 if t % 5 == 4 else 0)) for t in range(20)]
    assert not fds_keep_growing(bursts, "ingest")
    assert rss_growth(flat[:4], "ingest") is None  # too few readings to judge


def hist(value_us: int, count: int = 100) -> LatencyHistogram:
    h = LatencyHistogram(2)
    h.record_us(value_us, count)
    return h


def test_tail_quarters_and_redis_once_the_window_is_full() -> None:
    windows = [(i * 30, hist(5_000 if i < 6 else 12_000)) for i in range(24)]
    first, last = tail_growth(windows)
    assert first == pytest.approx(5.0, rel=0.02) and last == pytest.approx(12.0, rel=0.02)
    measured = {
        "redis_markers_bytes": {"per_hour": 3600 * 1000 * 20.0},  # 20 B a scan at 1,000 scans/s
        "redis_streams_bytes": {"last": 60e6},
        "redis_dlq_bytes": {"last": 1e6},
    }
    assert redis_steady_bytes(measured, 86_400) == pytest.approx(20_000 * 86_460 + 61e6)
    assert redis_steady_bytes({}, 86_400) is None


def tail_verdicts(spec: SoakSpec, first: float, last: float) -> list[bool | None]:
    result = {"rss_growth": {}, "fds_growing": {}, "ingest_p99_ms": (first, last),
              "freshness_p99_ms": (first, first), "verification": {"missing": 0, "duplicate_rows": 0},
              "stores": {}, "device_id_chars": 12, "dedup_window_s": 86_400}  # fmt: skip
    return [t.met for t in judge(result, spec) if t.name.startswith(("ingest p99", "freshness p99"))]


def test_the_tail_is_judged_on_quarters_long_enough_to_hold_a_p99() -> None:
    assert tail_verdicts(SoakSpec(), 2.0, 6.2) == [False, True]  # the hour: a tripled tail fails
    assert tail_verdicts(SoakSpec(), 2.0, 3.9) == [True, True]
    # the quick soak's 8 s quarters: a p99 of ~20 answers, reported and not judged
    assert tail_verdicts(QUICK, 2.0, 6.2) == [None, None]


def test_coarse_windows_hold_the_exact_histogram_of_their_seconds() -> None:
    series = TimeSeries()
    for second in range(90):
        for k in range(10):
            series.record(second, 1000 * (second + 1) + k, ok=k != 0)
    coarse = series.coarse(30)
    points = coarse.points(step=30)
    assert [p.second for p in points] == [0, 30, 60]
    assert [p.count for p in points] == [300, 300, 300] and [p.errors for p in points] == [30, 30, 30]
    merged = LatencyHistogram(2)
    for second, h in series.histograms().items():
        if second < 30:
            merged.add(h)
    assert coarse.histograms()[0].percentile_us(99.0) == merged.percentile_us(99.0)


def test_resources_of_a_group_alone_leave_its_children_to_their_own_groups() -> None:
    me = os.getpid()
    alone = procstats.resources({"me": [me]}, alone=("me",))["me"]
    assert alone.processes == 1 and alone.rss_bytes > 1_000_000 and alone.fds >= 3 and alone.threads >= 1
