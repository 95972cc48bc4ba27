"""Pure planning of the daily partitions (db/partitions.py)."""

from __future__ import annotations

from datetime import date

from barcode_pipeline.db.partitions import Plan, day_of, partition_clause, partition_name, plan

TODAY = date(2026, 12, 6)


def names(first: date, count: int) -> list[str]:
    return [partition_name(date.fromordinal(first.toordinal() + i)) for i in range(count)]


def test_names_and_bounds() -> None:
    assert partition_name(TODAY) == "p20261206" and day_of("p20261206") == TODAY
    assert day_of("p_other") is None
    assert partition_clause(TODAY) == "PARTITION p20261206 VALUES LESS THAN ('2026-12-07')"


def test_adds_up_to_the_horizon_above_the_highest() -> None:
    todo = plan(names(date(2026, 12, 1), 8), TODAY, ahead_days=8, retention_days=90)
    assert [partition_name(d) for d in todo.add] == names(date(2026, 12, 9), 6)  # 9th .. 14th
    assert todo.drop == [] and todo.keep == 8


def test_drops_whole_days_older_than_the_retention_only() -> None:
    existing = names(date(2026, 9, 1), 100)  # 1 Sep .. 9 Dec
    todo = plan(existing, TODAY, ahead_days=3, retention_days=90)  # cutoff 7 Sep
    assert todo.drop == names(date(2026, 9, 1), 6)  # 1..6 Sep: every scan older than the cutoff
    assert todo.add == [] and todo.keep == 94


def test_nothing_to_do_is_empty() -> None:
    assert plan(names(date(2026, 11, 1), 44), TODAY, ahead_days=8, retention_days=90) == Plan([], [], 44)


def test_never_drops_today_or_the_last_partition() -> None:
    todo = plan(names(date(2026, 1, 1), 2), date(2026, 12, 6), ahead_days=0, retention_days=31)
    assert todo.add == [date(2026, 12, 6)] and len(todo.drop) == 2
    old_only = plan(["p20260101"], date(2026, 1, 1), ahead_days=0, retention_days=31)
    assert old_only.drop == []
