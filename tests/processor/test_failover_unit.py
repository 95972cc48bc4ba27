"""Pure parts of the failover-safe commit protocol: commit history, primary watch, Sentinel specs."""

from __future__ import annotations

import pytest

from barcode_pipeline.adapters.sentinel import sentinel_addresses
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.processor.failover import CommitHistory, CommitMark, PrimaryWatch


def test_history_returns_the_position_committed_at_a_past_moment() -> None:
    h = CommitHistory(keep_ms=1_000)
    h.record(100, {0: 10, 1: 5})
    h.record(200, {0: 20})
    h.record(300, {1: 9})
    assert h.at(150) == {0: 10, 1: 5}
    assert h.at(250) == {0: 20, 1: 5}
    assert h.at(50) == {}


def test_history_folds_old_entries_instead_of_forgetting_them() -> None:
    h = CommitHistory(keep_ms=100)
    h.record(0, {0: 1, 1: 1})
    h.record(500, {0: 7})  # the first entry is older than keep_ms now: folded into the base
    assert len(h.entries) == 1
    assert h.at(400) == {0: 1, 1: 1}
    assert h.at(500) == {0: 7, 1: 1}


def test_primary_watch_reports_when_the_old_primary_was_last_seen() -> None:
    w = PrimaryWatch()
    assert w.changed_since("a") is None  # the first primary is no change
    w.seen("a", 1_000)
    assert w.changed_since("a") is None
    assert w.changed_since("b") == 1_000
    w.seen("b", 2_000)
    assert w.changed_since("b") is None


def test_sentinel_addresses_parse_and_refuse_bad_entries() -> None:
    assert sentinel_addresses("10.0.0.1:26379, 10.0.0.2:26380") == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    with pytest.raises(ConfigError, match="'nohost' is not host:port"):
        sentinel_addresses("10.0.0.1:26379,nohost")


def test_commit_mark_round_trips_and_ignores_metadata_it_did_not_write() -> None:
    mark = CommitMark("3f2a", 1_234)
    assert CommitMark.decode(mark.encode()) == mark
    for other in (None, "", "something else", "bp1 3f2a", "bp1 3f2a -5", "bp2 3f2a 7"):
        assert CommitMark.decode(other) is None


def test_history_safe_offset_falls_back_to_the_seed_then_to_the_oldest_known() -> None:
    h = CommitHistory(keep_ms=10_000)
    h.record(1_000, {0: 50})
    assert h.safe(0, 500) == 50  # before anything this process committed: the oldest it knows
    assert h.safe(1, 500) is None
    h.seed(0, 40)  # what the partition had committed before this process
    assert h.safe(0, 500) == 40
    assert h.safe(0, 1_000) == 50
    h.seed(0, 10)  # the first seed stands: a later look cannot move it
    assert h.safe(0, 500) == 40
