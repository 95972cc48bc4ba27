"""Pure parts of the failover-safe commit protocol: commit history, primary watch, Sentinel specs."""

from __future__ import annotations

import pytest

from barcode_pipeline.adapters.sentinel import sentinel_addresses
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.processor.failover import CommitHistory, PrimaryWatch


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
