"""The nemesis schedule: deterministic from its seed, overlapping, and covering the whole catalogue."""

from __future__ import annotations

import itertools

import pytest

from barcode_harness.chaos.schedule import (
    DISK,
    KINDS,
    SERVERS,
    Fault,
    ScheduleSpec,
    draw,
    overlaps,
    render,
    targets_for,
)

TARGETS = targets_for(2)


def test_targets_cover_the_catalogue() -> None:
    assert TARGETS == ("processor", "worker-1", "worker-2", "kafka", "redis", "mariadb")


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_same_seed_same_schedule(seed: int) -> None:
    assert draw(seed, TARGETS) == draw(seed, TARGETS)
    assert render(seed, draw(seed, TARGETS)) == render(seed, draw(seed, TARGETS))


def test_different_seeds_differ() -> None:
    assert len({tuple(draw(seed, TARGETS)) for seed in range(20)}) == 20


def test_pinned_schedule_does_not_drift() -> None:
    """A printed seed must replay the same faults across releases: pin one schedule's start."""
    first = draw(1, TARGETS)[:2]
    assert [(f.at_s, f.target, f.kind, f.for_s) for f in first] == [
        (0.2, "processor", "pause", 1.8),
        (2.1, "kafka", "kill", 1.7),
    ]


@pytest.mark.parametrize("seed", range(50))
def test_faults_stay_in_the_window_and_in_bounds(seed: int) -> None:
    spec = ScheduleSpec()
    faults = draw(seed, TARGETS, spec)
    assert faults, "every schedule injects something"
    assert faults == sorted(faults, key=lambda f: (f.at_s, f.target))
    for f in faults:
        assert 0 <= f.at_s < spec.duration_s * spec.active_share
        assert f.target in TARGETS and f.kind in KINDS
        assert spec.min_for_s <= f.for_s <= max(spec.max_for_s, spec.long_pause_s)


@pytest.mark.parametrize("seed", range(50))
def test_one_target_never_has_two_faults_at_once(seed: int) -> None:
    spec = ScheduleSpec()
    for target in TARGETS:
        mine = [f for f in draw(seed, TARGETS, spec) if f.target == target]
        for a, b in itertools.pairwise(mine):
            assert b.at_s >= a.end_s + spec.settle_s - 0.051  # starts are rounded to 0.1 s


def test_schedules_overlap() -> None:
    per_seed = [len(overlaps(draw(seed, TARGETS))) for seed in range(50)]
    assert sum(1 for n in per_seed if n > 0) >= 45, per_seed
    for a, b in overlaps(draw(3, TARGETS)):
        assert a.target != b.target and a.at_s <= b.at_s < a.end_s


def test_every_fault_kind_on_every_target_is_reachable() -> None:
    seen = {(f.target, f.kind) for seed in range(200) for f in draw(seed, TARGETS)}
    assert seen == {(t, k) for t in TARGETS for k in KINDS}
    long_pauses = [
        f
        for seed in range(200)
        for f in draw(seed, TARGETS)
        if f.target == "processor" and f.kind == "pause" and f.for_s == ScheduleSpec().long_pause_s
    ]
    assert long_pauses, "a processor pause past its session timeout must be drawn sometimes"


def test_servers_are_marked() -> None:
    faults = [f for seed in range(20) for f in draw(seed, TARGETS)]
    assert {f.target for f in faults if f.is_server} == set(SERVERS)


def test_fill_faults_are_opt_in_and_leave_every_seed_as_it_was() -> None:
    # drawn before fills existed: a seed must replay the same schedule
    assert draw(7, TARGETS, ScheduleSpec(duration_s=60))[:3] == [
        Fault(0.5, "worker-1", "pause", 5.6),
        Fault(0.7, "redis", "kill", 3.6),
        Fault(2.6, "processor", "kill", 1.6),
    ]
    plain = [f for seed in range(20) for f in draw(seed, TARGETS, ScheduleSpec())]
    assert all(f.kind in KINDS and f.target != DISK for f in plain)
    spec = ScheduleSpec(duration_s=1800, mean_gap_s=20, fills=("redis", DISK))
    long = [f for seed in range(3) for f in draw(seed, targets_for(2, spec), spec)]
    full = {(f.target, f.kind) for f in long if f.kind == "full"}
    assert full == {("redis", "full"), (DISK, "full")}
    assert all(f.kind == "full" for f in long if f.target == DISK)
    assert max(f.at_s for f in long) > 0.6 * 1800  # spread over the schedule, not bunched at its start
