"""The warm-up of the demo and of `bench vegeta`: rounds until the p99 has stopped falling (pure logic)."""

from __future__ import annotations

from barcode_harness.bench.warmup import warm_for, warm_until_steady


def _rounds(p99s: list[float], min_rounds: int = 3, max_rounds: int = 20) -> list[float]:
    return warm_until_steady(lambda index: p99s[index], min_rounds, max_rounds)


def test_a_warm_stack_stops_after_the_minimum() -> None:
    assert _rounds([20.0, 22.0, 19.0, 5.0]) == [20.0, 22.0, 19.0]


def test_a_cold_broker_warms_until_the_tail_stops_falling() -> None:
    cold = [450.0, 100.0, 30.0, 25.0, 24.0, 25.0, 3.0]
    assert _rounds(cold) == cold[:6]


def test_one_unlucky_round_does_not_prolong_it() -> None:
    assert _rounds([30.0, 8.0, 40.0, 7.5, 9.0]) == [30.0, 8.0, 40.0, 7.5]


def test_one_round_that_still_falls_by_a_fifth_keeps_it_going() -> None:
    assert _rounds([30.0, 10.0, 9.5, 7.0, 9.0, 9.0]) == [30.0, 10.0, 9.5, 7.0, 9.0, 9.0]


def test_the_maximum_bounds_a_tail_that_keeps_falling() -> None:
    falling = [1000.0 / 2**i for i in range(10)]
    assert _rounds(falling, max_rounds=5) == falling[:5]


def test_the_minimum_is_honoured() -> None:
    assert _rounds([5.0] * 10, min_rounds=6) == [5.0] * 6


def test_a_time_budget_bounds_the_rounds() -> None:
    falling = [1000.0 / (k + 1) ** 2 for k in range(100)]  # never steady
    assert len(warm_for(lambda index: falling[index], total_s=180, round_s=10)) == 18
    assert len(warm_for(lambda index: falling[index], total_s=20, round_s=10)) == 2  # fewer than 3 fit
    assert len(warm_for(lambda index: falling[index], total_s=1, round_s=10)) == 1
