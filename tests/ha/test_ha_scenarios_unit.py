"""The ha scenario table and its poll helper, without a stack."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from unittest.mock import MagicMock

import pytest

from barcode_harness.chaos.checks import Ledger, polled, wait_until
from barcode_harness.chaos.context import ChaosContext, ChaosParams
from barcode_harness.chaos.ha_scenarios import SMOKE, AppHostKill, select
from barcode_pipeline.errors import ConfigError

NAMES = [
    "ha-kafka-leader-kill", "ha-kafka-controller-kill", "ha-kafka-broker-pause", "ha-kafka-broker-partition",
    "ha-kafka-rolling-restart", "ha-redis-primary-kill", "ha-redis-split-brain", "ha-redis-replica-kill",
    "ha-app-host-kill",
]  # fmt: skip


def test_every_ha_scenario_is_listed_once_in_key_order() -> None:
    every = select(["all"])
    assert [s.name for s in every] == NAMES
    assert [s.key for s in every] == [f"h{i}" for i in range(1, 10)]
    assert all(s.title and s.fault for s in every)


def test_select_by_name_or_key_gives_fresh_objects() -> None:
    assert [s.name for s in select(["h6", "ha-kafka-leader-kill"])] == ["ha-redis-primary-kill", NAMES[0]]
    assert select(list(SMOKE))[0] is not select(list(SMOKE))[0]
    with pytest.raises(ConfigError, match="unknown ha scenario"):
        select(["h10"])


def test_polled_returns_the_last_value_and_treats_errors_as_not_yet() -> None:
    answers: Iterator[int | Exception] = iter([ValueError("failing over"), 1, 2, 3])

    def probe() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert polled(probe, lambda n: n >= 2, 0, timeout=5)[0] == 2
    last, took = polled(lambda: 7, lambda n: n > 7, 0, timeout=0.3)
    assert last == 7 and took >= 0.3


def test_polled_waits_out_only_the_errors_it_is_told_to() -> None:
    """A chaos wait that expects Redis errors must not hide a bug behind its timeout."""
    answers: Iterator[int | Exception] = iter([ValueError("not yet"), 3])

    def probe() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert polled(probe, lambda n: n >= 3, 0, timeout=5, errors=(ValueError,))[0] == 3

    def broken() -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        polled(broken, lambda n: n >= 1, 0, timeout=5, errors=(ValueError,))
    with pytest.raises(KeyError):
        polled(broken, lambda n: n >= 1, 0, timeout=5, errors=())
    with pytest.raises(KeyError):  # wait_until passes its errors on
        wait_until(lambda: broken() > 0, 5, "a broken condition", errors=(OSError,))


def test_the_app_host_kill_times_the_claim_as_a_takeover_beside_the_failover(tmp_path: Path) -> None:
    """Its takeover check comes from the single-node Takeover base, kept apart from the partitions'."""
    scenario = next(s for s in select(["h9"]) if isinstance(s, AppHostKill))
    probe = MagicMock(initial=4, done_after_s=3.21)
    scenario._probe = probe
    scenario._restart_victim = lambda: None  # type: ignore[method-assign]
    (tmp_path / "pipeline.log").write_text("=== scenario h9 ha-app-host-kill: load\nrewound 5 records\n")
    ctx = MagicMock(metrics={"takeover_s": 9.9}, workdir=tmp_path / "h9", params=ChaosParams())
    ctx.logged_since = partial(ChaosContext.logged_since, ctx)
    scenario.after_drain(ctx, Ledger())
    assert ctx.metrics == {"takeover_s": 9.9, "claimed_s": 3.21, "rewound": 5}
    ctx.check.assert_called_once_with(
        "the live host's workers claimed the dead host's pending entries within 10 s", True,
        "4 entries, 3.2 s after the kill",
    )  # fmt: skip
    probe.stop.assert_called_once_with()
