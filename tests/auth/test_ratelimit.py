"""The shared rate limit's window arithmetic and its sync bookkeeping, as pure logic (no Redis)."""

from __future__ import annotations

import asyncio

from barcode_pipeline.auth.ratelimit import Delta, RateLimiter

W = 2.0  # window seconds; rate 5/s -> 10 scans a window


def test_a_quiet_key_may_send_one_window_of_scans_then_waits_for_the_next() -> None:
    limiter = RateLimiter(W)
    assert limiter.take("k", 5, 6, now=100.0) == 0
    assert limiter.take("k", 5, 6, now=100.5) == 0  # under the limit: charged all six (12 > 10)
    wait = limiter.take("k", 5, 1, now=101.0)
    # this window alone is over: wait for its end (1 s) and for 12 to weigh under 10 (1/6 of the next)
    assert abs(wait - (1.0 + W * (1 - 10 / 12))) < 0.01
    assert limiter.take("k", 5, 1, now=101.0 + wait) == 0
    assert limiter.take("other", 5, 1, now=101.0) == 0  # per key


def test_the_previous_window_weighs_as_much_as_it_overlaps_the_last_window_s() -> None:
    limiter = RateLimiter(W)
    assert limiter.take("k", 5, 10, now=100.0) == 0
    assert limiter.take("k", 5, 1, now=102.0) > 0  # 10 x 1.0 still counts
    assert limiter.take("k", 5, 2, now=102.5) == 0  # 10 x 0.75: 7.5, then 9.5
    assert limiter.take("k", 5, 1, now=102.5) == 0  # 9.5 < 10: admitted, charged (10.5)
    assert limiter.take("k", 5, 1, now=102.5) > 0
    # at 103.5 the previous window weighs 2.5: with this one's 3, five more fit, the sixth waits
    assert all(limiter.take("k", 5, 1, now=103.5) == 0 for _ in range(5))
    assert limiter.take("k", 5, 1, now=103.5) > 0
    assert limiter.take("k", 5, 10, now=108.0) == 0  # two windows on, nothing weighs


def test_a_sync_shows_the_other_processes_scans_and_a_failed_one_loses_nothing() -> None:
    limiter = RateLimiter(W)
    limiter.take("k", 5, 3, now=100.0)
    deltas = limiter.snapshot(100.1)
    assert deltas == [Delta("k", 50, 3, read=True)]
    assert limiter.take("k", 5, 6, now=100.2) == 0  # sending 3 + 0 unsent: room
    limiter.apply(deltas, [(9, 0)])  # Redis: 9 in all, 6 of them from other processes
    assert limiter.take("k", 5, 1, now=100.3) > 0  # 9 + the 6 unsent
    deltas = limiter.snapshot(100.4)
    limiter.apply(deltas, None)  # Redis unreachable: the 6 are unsent again, sent next time
    assert limiter.snapshot(100.5) == [Delta("k", 50, 6, read=True)]


def test_scans_of_a_window_that_ended_unsent_are_added_late() -> None:
    limiter = RateLimiter(W)
    limiter.take("k", 5, 4, now=101.9)
    limiter.take("k", 5, 1, now=102.1)  # a new window: the 4 are late
    deltas = limiter.snapshot(102.2)
    late, current = Delta("k", 50, 4, read=False), Delta("k", 51, 1, read=True)
    assert sorted(deltas, key=lambda d: d.window) == [late, current]
    limiter.apply(deltas, [(1, 4)])
    assert limiter.snapshot(110.0) == []  # idle keys are forgotten, old late scans dropped


def test_without_redis_the_limit_holds_per_process() -> None:
    limiter = RateLimiter(W)  # no Redis at all
    admitted = sum(limiter.take("k", 5, 1, now=100.0) == 0 for _ in range(30))
    asyncio.run(limiter.sync())
    assert admitted == 10 and not limiter.shared
    assert limiter.take("k", 5, 1, now=100.5) > 0  # the count survived the failed sync
