"""Which consumer errors are fatal, and the budget that tells a broker hiccup from a rival instance."""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError

from barcode_pipeline.processor.fencing import ReplacementBudget, close_within, is_fatal


def test_the_fatal_event_is_fatal_although_its_flag_says_no() -> None:
    event = KafkaError(KafkaError._FATAL)
    assert not event.fatal()  # what consume() hands over after a fencing: the flag alone misses it
    assert is_fatal(event)


def test_fencing_and_flagged_errors_are_fatal() -> None:
    assert is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    assert is_fatal(KafkaError(KafkaError.UNKNOWN, fatal=True))


def test_ordinary_errors_are_not_fatal() -> None:
    for code in (KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError.REBALANCE_IN_PROGRESS,
                 KafkaError.UNKNOWN_MEMBER_ID, KafkaError._ALL_BROKERS_DOWN):  # fmt: skip
        assert not is_fatal(KafkaError(code))


def test_budget_allows_a_few_replacements_then_refuses_within_the_window() -> None:
    budget = ReplacementBudget(limit=3, window_s=60)
    assert [budget.allow(now=t) for t in (0, 1, 2, 3)] == [True, True, True, False]


def test_budget_recovers_once_the_window_has_passed() -> None:
    budget = ReplacementBudget(limit=2, window_s=60)
    assert budget.allow(now=0) and budget.allow(now=10)
    assert not budget.allow(now=30)
    assert budget.allow(now=71)  # the first two are out of the window


def test_idle_watch_counts_running_time_and_rechecks_at_intervals() -> None:
    from barcode_pipeline.processor.wedge import IdleWatch

    watch = IdleWatch(after_s=1.0, poll_timeout_s=0.05, recheck_s=0.5)
    due = [watch.polled(0, 0.05) for _ in range(19)]
    assert not any(due)  # 0.95 s idle
    assert watch.polled(0, 0.05)  # 1.0 s: look at the lag
    assert not any(watch.polled(0, 0.05) for _ in range(9))
    assert watch.polled(0, 0.05)  # and again 0.5 s later
    assert not watch.polled(3, 0.01) and watch.idle_s == 0  # records delivered: start over


def test_idle_watch_ignores_time_spent_stopped() -> None:
    from barcode_pipeline.processor.wedge import IdleWatch

    watch = IdleWatch(after_s=1.0, poll_timeout_s=0.05)
    assert not watch.polled(0, 30.0)  # one poll spanning a 30 s SIGSTOP counts 0.1 s
    assert watch.idle_s == 0.1


def test_a_close_that_hangs_is_abandoned_after_its_bound_and_a_quick_one_completes() -> None:
    release = threading.Event()
    started = time.monotonic()
    assert close_within(release.wait, timeout_s=0.2) is False  # a close stuck on a dead coordinator
    assert 0.2 <= time.monotonic() - started < 2.0
    release.set()
    calls: list[int] = []
    assert close_within(lambda: calls.append(1), timeout_s=2.0) is True
    assert calls == [1]

    def broken() -> None:
        raise RuntimeError("already closed")

    assert close_within(broken, timeout_s=2.0) is True  # its failure does not reach the caller
