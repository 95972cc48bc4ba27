"""Percentiles, exact merging through the encoded form, and the per-second series."""

from __future__ import annotations

import random

import pytest

from barcode_harness.bench.histogram import HIGHEST_US, LatencyHistogram, TimeSeries


def filled(values: list[int]) -> LatencyHistogram:
    hist = LatencyHistogram()
    for v in values:
        hist.record_us(v)
    return hist


def test_percentiles_of_a_uniform_distribution_within_hdr_precision() -> None:
    hist = filled(list(range(1, 10_001)))  # 1 µs .. 10 ms
    p = hist.percentiles_us()
    assert p[50.0] == pytest.approx(5000, rel=1e-3)
    assert p[90.0] == pytest.approx(9000, rel=1e-3)
    assert p[99.0] == pytest.approx(9900, rel=1e-3)
    assert p[99.9] == pytest.approx(9990, rel=1e-3)
    assert hist.max_us == pytest.approx(10_000, rel=1e-3)
    assert hist.mean_us == pytest.approx(5000.5, rel=1e-3)
    summary = hist.summary()
    assert summary.count == 10_000
    assert summary.p99_ms == pytest.approx(9.9, rel=1e-3)


def test_tail_percentiles_see_rare_outliers() -> None:
    values = [200] * 9_990 + [50_000] * 10  # 0.1 % of requests stall for 50 ms
    summary = filled(values).summary()
    assert summary.p50_ms == pytest.approx(0.2, rel=1e-3)
    assert summary.p99_ms == pytest.approx(0.2, rel=1e-3)
    assert summary.p999_ms == pytest.approx(0.2, rel=1e-3)
    assert summary.max_ms == pytest.approx(50, rel=1e-3)
    two_tenths = filled([200] * 9_980 + [50_000] * 20).summary()
    assert two_tenths.p999_ms == pytest.approx(50, rel=1e-3)


def test_merging_encoded_parts_equals_recording_everything_in_one() -> None:
    rng = random.Random(5)
    values = [int(rng.lognormvariate(7, 1)) for _ in range(30_000)]
    whole = filled(values)
    parts = [filled(values[i::3]).encode() for i in range(3)]
    merged = LatencyHistogram.merged(parts)
    assert merged.count == whole.count
    assert merged.percentiles_us() == whole.percentiles_us()
    assert merged.max_us == whole.max_us
    assert merged.summary() == whole.summary()


def test_encode_decode_round_trip_and_bytes_input() -> None:
    hist = filled([5, 50, 500, 5000])
    encoded = hist.encode()
    assert isinstance(encoded, str)
    for form in (encoded, encoded.encode("ascii")):
        back = LatencyHistogram.decode(form)
        assert back.percentiles_us() == hist.percentiles_us()


def test_out_of_range_values_are_clamped_not_dropped() -> None:
    hist = LatencyHistogram()
    hist.record_us(HIGHEST_US * 10)
    hist.record_us(-3)
    hist.record_s(0.0015)
    assert hist.count == 3
    assert hist.max_us >= HIGHEST_US


def test_empty_histogram_summarises_to_zeros() -> None:
    summary = LatencyHistogram().summary()
    assert summary.count == 0 and summary.p99_ms == 0.0 and summary.max_ms == 0.0 and summary.mean_ms == 0.0
    assert LatencyHistogram.merged([]).count == 0


def test_time_series_merges_per_second_and_fills_gaps() -> None:
    a, b = TimeSeries(), TimeSeries()
    for _ in range(100):
        a.record(0, 1000, True)
        b.record(0, 3000, True)
    a.record(2, 500, False)
    b.error(2)
    total = TimeSeries()
    total.add_encoded(a.encode())
    total.add_encoded(b.encode())
    points = total.points(seconds=4)
    assert [p.second for p in points] == [0, 1, 2, 3]
    zero, one, two, _ = points
    assert (zero.count, zero.ok, zero.errors) == (200, 200, 0)
    assert zero.p50_ms == pytest.approx(1.0, rel=0.01)
    assert zero.p99_ms == pytest.approx(3.0, rel=0.01)
    assert (one.count, one.errors) == (0, 0)  # a stall shows as an empty second
    assert (two.count, two.ok, two.errors) == (1, 0, 2)
