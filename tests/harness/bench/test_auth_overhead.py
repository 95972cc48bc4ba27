"""``bench auth``: the in-process figure (the end-to-end one needs the stack; ``bench auth --quick``)."""

from __future__ import annotations

from barcode_harness.bench.auth_overhead import in_process_cost_us


def test_in_process_cost_times_both_ways_in() -> None:
    cost = in_process_cost_us(2_000)
    assert set(cost) == {"key_us", "trusted_network_us"}
    assert all(value > 0 for value in cost.values())
