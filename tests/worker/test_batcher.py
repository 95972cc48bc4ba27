"""Unit tests of the batching rule (pure: the clock is a parameter)."""

from __future__ import annotations

import pytest

from barcode_pipeline.worker.batcher import Batcher, read_count


def test_empty_batch_is_never_due_and_has_no_deadline() -> None:
    b: Batcher[int] = Batcher(max_size=3, max_delay_s=0.2)
    assert b.trigger(100.0) is None
    assert b.wait_s(100.0) is None
    assert b.room() == 3
    assert b.take() == []


def test_full_batch_is_due_at_once() -> None:
    b: Batcher[int] = Batcher(max_size=3, max_delay_s=10)
    b.add([1, 2, 3], now=0.0)
    assert b.trigger(0.0) == "size"
    assert b.wait_s(0.0) == 0.0
    assert b.room() == 0


def test_partial_batch_is_due_when_its_oldest_item_has_waited_max_delay() -> None:
    b: Batcher[int] = Batcher(max_size=10, max_delay_s=0.2)
    b.add([1], now=1.0)
    b.add([2], now=1.15)
    assert b.trigger(1.1) is None
    assert b.wait_s(1.1) == pytest.approx(0.1)
    assert b.trigger(1.2) == "delay"  # the oldest item sets the deadline, not the newest
    assert b.wait_s(1.3) == 0.0


def test_take_releases_at_most_max_size_oldest_first_and_keeps_arrival_times() -> None:
    b: Batcher[int] = Batcher(max_size=2, max_delay_s=0.2)
    b.add([1, 2], now=0.0)
    b.add([3], now=0.5)
    assert b.take() == [1, 2]
    assert len(b) == 1
    assert b.trigger(0.6) is None  # item 3 arrived at 0.5: its own deadline is 0.7
    assert b.trigger(0.7) == "delay"
    assert b.take() == [3]


def test_take_all_empties_the_batch() -> None:
    b: Batcher[str] = Batcher(max_size=2, max_delay_s=1)
    b.add(["a", "b", "c"], now=0.0)
    assert b.take_all() == ["a", "b", "c"]
    assert len(b) == 0


def test_zero_delay_means_every_read_is_written_at_once() -> None:
    b: Batcher[int] = Batcher(max_size=100, max_delay_s=0)
    b.add([1], now=5.0)
    assert b.trigger(5.0) == "delay"


def test_an_early_batch_goes_once_the_interval_since_the_last_write_has_passed() -> None:
    b: Batcher[int] = Batcher(max_size=500, max_delay_s=0.2, early_size=3, min_interval_s=0.1)
    b.add([1, 2], now=0.0)
    assert b.trigger(0.0) is None  # too few for an early write: the delay rules
    assert b.wait_s(0.0) == pytest.approx(0.2)
    b.add([3], now=0.01)
    assert b.trigger(0.01) == "early"  # no write yet, so the interval has passed
    assert b.take(0.01) == [1, 2, 3]
    b.add([4, 5, 6], now=0.05)
    assert b.trigger(0.05) is None  # only 0.04 s since the last write
    assert b.wait_s(0.05) == pytest.approx(0.06)  # wake when the interval is over
    assert b.trigger(0.11) == "early"


def test_early_writes_leave_full_batches_to_high_rates_and_small_ones_to_the_delay() -> None:
    b: Batcher[int] = Batcher(max_size=5, max_delay_s=0.2, early_size=3, min_interval_s=0.1)
    b.take(0.0)
    b.add(range(5), now=0.02)
    assert b.trigger(0.02) == "size"  # a full batch never waits for the interval
    b.take(0.02)
    b.add([9], now=0.5)
    assert b.trigger(0.6) is None and b.trigger(0.7) == "delay"  # one scan: the delay, as before
    off: Batcher[int] = Batcher(max_size=500, max_delay_s=0.2)
    off.add(range(400), now=0.0)
    assert off.trigger(0.1) is None  # early_size 0: no early writes


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Batcher(max_size=0, max_delay_s=1)
    with pytest.raises(ValueError):
        Batcher(max_size=1, max_delay_s=-1)


@pytest.mark.parametrize(
    ("room", "streams", "expected"),
    [(500, 4, 125), (501, 4, 126), (3, 4, 1), (0, 4, 1), (10, 1, 10), (7, 0, 7)],
)
def test_read_count_splits_the_room_over_the_shards(room: int, streams: int, expected: int) -> None:
    assert read_count(room, streams) == expected
