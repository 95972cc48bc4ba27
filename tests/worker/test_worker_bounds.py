"""The workers at the bounds of Redis: memory full (maxmemory, noeviction) and the DLQ at its limit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from barcode_pipeline import names
from barcode_pipeline.worker.recovery import Heartbeat
from tests.stack_helpers import wait_until
from tests.worker.conftest import Env

pytestmark = pytest.mark.integration


@contextmanager
def redis_full(client: redis.Redis) -> Iterator[None]:
    """Redis over its maxmemory for the block: every command that needs memory is refused."""
    old = client.config_get("maxmemory")["maxmemory"]
    client.config_set("maxmemory", "1mb")
    try:
        yield
    finally:
        client.config_set("maxmemory", old)


def held(env: Env, count: int) -> None:
    """Start a worker that holds what it reads for 4 s, and wait until it holds ``count`` entries."""
    env.start("w1", env.settings.updated({"worker_max_delay_ms": 4000, "worker_early_batch": 0}))
    wait_until(lambda: env.pending("w1") == count, 5, f"{count} entries read and held")


def test_stored_entries_are_acknowledged_while_redis_is_full(env: Env) -> None:
    """Before: the ack was a MULTI, refused whole, and stored entries came back until they were
    dead-lettered as max_deliveries. Also: the heartbeat stays live, so nobody takes over."""
    env.create_groups()
    env.add(env.many(300))
    held(env, 300)
    with redis_full(env.redis):
        with pytest.raises(redis.OutOfMemoryError):
            env.redis.set("probe", "1")  # the limit is in force
        wait_until(lambda: env.db.count() == 300, 15, "every scan stored while Redis is full")
        wait_until(lambda: env.pending() == 0, 10, "every stored entry acknowledged while Redis is full")
        time.sleep(3 * env.settings.worker.heartbeat_ttl_s)  # several TTLs: it must not lapse
        assert env.redis.exists(names.heartbeat_key("w1")) == 1, "the heartbeat lapsed while Redis was full"
    assert env.dlq() == []


def test_dead_letters_wait_pending_while_redis_is_full_and_go_once_there_is_room(env: Env) -> None:
    env.create_groups()
    env.add([env.scan(1, device="NOT-A-MAPPED-PC"), env.scan(2)])
    held(env, 2)
    with redis_full(env.redis):
        wait_until(lambda: env.db.count() == 1, 10, "the good scan stored")
        wait_until(lambda: env.pending() == 1, 10, "only the dead letter left pending")
        assert env.dlq() == []
    # room again: the next worker takes the entry over and dead-letters it with its own cause
    env.stop_all()
    env.start("w2")
    wait_until(lambda: len(env.dlq()) == 1, 15, "the dead letter written once Redis has room")
    assert env.dlq()[0]["dlq_reason"].startswith("unknown device")
    wait_until(lambda: env.pending() == 0, 5, "acknowledged with it")


def test_the_dlq_at_its_limit_keeps_further_dead_letters_pending(env: Env) -> None:
    env.create_groups()
    env.redis.xadd(names.DLQ_STREAM, {"dlq_reason": "earlier"})
    env.redis.xadd(names.DLQ_STREAM, {"dlq_reason": "earlier"})
    env.add([env.scan(1, device="NOT-A-MAPPED-PC"), env.scan(2)])
    env.start("w1", env.settings.updated({"dlq_max_entries": 2}))
    wait_until(lambda: env.db.count() == 1, 10, "the good scan stored")
    wait_until(lambda: env.pending() == 1, 10, "the dead letter kept pending")
    time.sleep(1)
    assert len(env.dlq()) == 2, "the DLQ grew past its limit"


def test_a_heartbeat_is_kept_alive_by_pexpire_when_set_is_refused(env: Env) -> None:
    beat = Heartbeat(env.redis, "hb-test", 2.0, progress=time.monotonic, stall_limit_s=60)
    beat.beat()
    with redis_full(env.redis):
        time.sleep(1.2)
        beat.beat()  # SET refused: PEXPIRE renews the live key
        assert env.redis.pttl(beat.key) > 1500
        env.redis.delete(beat.key)
        with pytest.raises(redis.OutOfMemoryError):
            beat.beat()  # gone: nothing to renew, and the error says why
