"""The shared rate limit's window arithmetic and its sync bookkeeping, as pure logic (no Redis)."""

from __future__ import annotations

import asyncio
import time

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
    wait = limiter.take("k", 5, 1, now=102.0)  # 10 x 1.0 still counts; under 10 once it weighs 9.x
    assert 0 < wait < W and limiter.take("k", 5, 0, now=102.0 + wait) == 0
    assert limiter.take("k", 5, 2, now=102.5) == 0  # 10 x 0.75: 7.5, then 9.5
    assert limiter.take("k", 5, 1, now=102.5) == 0  # 9.5 < 10: admitted, charged (10.5)
    assert limiter.take("k", 5, 1, now=102.5) > 0
    # at 103.5 the previous window weighs 2.5: with this one's 3, five more fit, the sixth waits
    assert all(limiter.take("k", 5, 1, now=103.5) == 0 for _ in range(5))
    assert limiter.take("k", 5, 1, now=103.5) > 0
    assert limiter.take("k", 5, 10, now=108.0) == 0  # two windows on, nothing weighs


def test_asking_charges_nothing_and_a_refund_gives_scans_back() -> None:
    limiter = RateLimiter(W)
    assert limiter.take("k", 5, 10, now=100.0) == 0
    assert limiter.take("k", 5, 0, now=100.1) > 0  # over: asked, refused, nothing charged
    limiter.refund("k", 4)  # Kafka did not take four of them
    assert limiter.take("k", 5, 0, now=100.2) == 0 and limiter.take("k", 5, 4, now=100.2) == 0


def test_a_sync_shows_the_other_processes_scans_and_writes_absolute_counts() -> None:
    limiter = RateLimiter(W)
    limiter.take("k", 5, 3, now=100.0)
    deltas = limiter.snapshot(100.1)
    assert deltas == [Delta("k", 50, 3, read=True)]
    assert limiter.take("k", 5, 2, now=100.2) == 0  # admitted while the sync is under way
    limiter.apply(deltas, [(9, 0)])  # Redis: 9 in all, 3 of them ours as written
    assert limiter.take("k", 5, 1, now=100.3) > 0  # 6 others + our 5
    limiter.apply(limiter.snapshot(100.4), None)  # Redis unreachable: nothing to undo
    assert limiter.snapshot(100.5) == [Delta("k", 50, 5, read=True)]  # the whole count, again
    limiter.apply([Delta("k", 50, 5, read=True)], [(11, 0)])  # written twice: still 6 others
    assert limiter.take("k", 5, 0, now=100.6) > 0 and limiter.take("k", 5, 0, now=102.9) == 0


def test_a_window_that_ends_during_a_sync_becomes_the_previous_one_counted_once() -> None:
    limiter = RateLimiter(W)
    limiter.take("k", 5, 4, now=101.8)
    deltas = limiter.snapshot(101.85)  # writes 4 for window 50
    limiter.take("k", 5, 2, now=101.9)  # 6 now, 2 not in the write
    limiter.take("k", 5, 1, now=102.0)  # window 51 starts: 6 is the previous window (from here)
    limiter.apply(deltas, [(7, 0)])  # Redis: 3 others + our 4 written; ours was 6 by the roll
    count = limiter._counts["k"]
    assert (count.window, count.own, count.previous) == (51, 1, 9.0)  # 3 others + our 6, once
    late = limiter.snapshot(102.1)
    assert Delta("k", 50, 6, read=False) in late and Delta("k", 51, 1, read=True) in late
    limiter.apply(late, None)  # unreachable: the late count is kept for the next sync
    assert Delta("k", 50, 6, read=False) in limiter.snapshot(102.2)
    assert limiter.snapshot(110.0) == []  # idle keys are forgotten, old late counts dropped


def test_without_redis_the_limit_holds_per_process() -> None:
    told: list[bool] = []
    limiter = RateLimiter(60.0, on_sync=told.append)  # no Redis at all; a long window, so the real
    now = time.time() // 60 * 60 + 1  # clock stays in it, early on: the next take is in it too
    admitted = sum(limiter.take("k", 5, 1, now=now) == 0 for _ in range(400))
    asyncio.run(limiter.sync())
    assert admitted == 300 and not limiter.shared and told == [False]  # the gauge goes to 0
    assert limiter.take("k", 5, 1, now=now + 0.5) > 0  # the count survived the failed sync
