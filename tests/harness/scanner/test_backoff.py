"""Back-off timing, Retry-After parsing and the endpoint gate (circuit breaker)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from barcode_harness.scanner.backoff import EndpointGate, parse_retry_after
from barcode_pipeline.retry import backoff_delay


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        step = min(10.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base_s=0.1, cap_s=10.0, rng=rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jittered, not lock-step
    assert backoff_delay(10_000, base_s=0.1, cap_s=10.0) <= 10.0
    with pytest.raises(ValueError):
        backoff_delay(0, base_s=0.1, cap_s=1.0)


def test_retry_after_seconds_dates_and_garbage() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("99999") == 300.0  # capped
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(7.0)


def test_gate_lets_one_probe_through_after_a_failure() -> None:
    async def scenario() -> None:
        clock = [0.0]
        gate = EndpointGate(base_s=0.05, cap_s=0.05, clock=lambda: clock[0])
        gen = await gate.acquire()
        stale = gen
        gate.failure(gen, retry_after_s=None)
        assert not gate.is_closed
        gate.failure(stale)  # a request in flight before the gate opened: ignored
        assert gate.failures == 1

        clock[0] = 1.0  # back-off over
        probe = await gate.acquire()
        waiter = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # only one probe at a time
        gate.failure(probe, retry_after_s=0.0)
        assert gate.failures == 2
        clock[0] = 2.0
        # the waiter wakes on the state change and becomes the next probe (the deadline only bounds a bug)
        await asyncio.wait_for(waiter, 1)
        gate.success()
        assert gate.is_closed and gate.failures == 0
        assert await gate.acquire() == gate.generation

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_gate_honours_retry_after() -> None:
    async def scenario() -> None:
        clock = [0.0]
        gate = EndpointGate(base_s=0.001, cap_s=0.001, clock=lambda: clock[0])
        gate.failure(await gate.acquire(), retry_after_s=30.0)
        task = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.02)
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())


def test_abandoned_probe_lets_another_request_probe() -> None:
    async def scenario() -> None:
        clock = [0.0]
        gate = EndpointGate(base_s=0.01, cap_s=0.01, clock=lambda: clock[0])
        gate.failure(await gate.acquire())
        clock[0] = 1.0
        probe = await gate.acquire()
        other = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0.01)
        assert not other.done()
        gate.abandon(probe)
        await asyncio.wait_for(other, 1)

    asyncio.run(scenario())
