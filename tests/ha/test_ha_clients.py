"""Clients on the ha profile: Redis through Sentinel across a failover, WAIT before the commit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from barcode_harness.stack.ha import HaStackManager
from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.adapters.sentinel import primary_address
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.processor.failover import ReplicaShortfall
from barcode_pipeline.processor.service import Processor

pytestmark = pytest.mark.integration


def _events(n: int) -> list[ScanEvent]:
    tag = uuid.uuid4().hex[:8]
    return [ScanEvent(barcode=f"880{i:010d}", device_id=f"HA-{tag}", scan_time=int(time.time() * 1000),
                      scan_id=f"{tag}-{i}") for i in range(n)]  # fmt: skip


def _counters(client: redis.Redis, shards: int) -> int:
    return sum(int(client.get(names.publish_counter(s)) or 0) for s in range(shards))


def wait_for_new_primary(settings: Settings, old: tuple[str, int], timeout: float = 60) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = primary_address(settings)
            if now != old:
                return now
        except redis.RedisError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"Sentinel still reports {old} after {timeout}s")


def _promotable(replica: dict[str, Any]) -> bool:
    """Would Sentinel pick this replica? Its own tests (sentinelSelectSlave): not down, linked to
    the primary, pinged within 5 s, INFO within 30 s, a priority above 0; and a replica for 1 s."""
    return (
        replica.get("flags") == "slave"
        and replica.get("master-link-status") == "ok"
        and int(replica.get("last-ok-ping-reply", 10**9)) < 5_000
        and int(replica.get("info-refresh", 10**9)) < 30_000
        and int(replica.get("role-reported-time", 0)) >= 1_000
        and int(replica.get("slave-priority", 0)) > 0
    )


def wait_for_a_promotable_replica(sentinel: redis.Redis, service: str, timeout: float = 30) -> None:
    """A forced failover before then fails with NOGOODSLAVE: right after start-up or an earlier
    failover, Sentinel has not yet pinged, asked INFO of or seen the link of any replica."""
    keys = ("ip", "flags", "master-link-status", "last-ok-ping-reply", "info-refresh", "role-reported-time")
    deadline = time.monotonic() + timeout
    while True:
        try:
            replicas: list[dict[str, Any]] = sentinel.sentinel_slaves(service)
        except redis.RedisError as exc:
            replicas = [{"error": str(exc)}]
        if any(_promotable(r) for r in replicas):
            return
        if time.monotonic() >= deadline:
            seen = [{k: r.get(k) for k in ("error", *keys) if k in r} for r in replicas]
            raise AssertionError(f"no replica of {service} Sentinel can promote after {timeout:.0f}s: {seen}")
        time.sleep(0.2)


CLIENTS_REDIS_DB = 5  # this module's own database: its test events must never reach a pipeline


@pytest.fixture
def settings(ha_settings: Settings) -> Iterator[Settings]:
    s = ha_settings.updated({"redis_url": ha_settings.redis.url.rsplit("/", 1)[0] + f"/{CLIENTS_REDIS_DB}"})
    yield s
    client = redis_adapter.client(s)
    client.flushdb()
    client.close()


@pytest.fixture
def processor(settings: Settings) -> Iterator[Processor]:
    proc = Processor(settings, group=f"test-ha-{uuid.uuid4().hex[:8]}")
    yield proc
    proc.close()


def test_every_publish_is_confirmed_by_both_replicas(processor: Processor, settings: Settings) -> None:
    events = _events(30)
    client = redis_adapter.client(settings)
    before = _counters(client, settings.streams.shards)
    assert processor.wait_replicas == 2
    assert processor.publish(events) == (30, 0)
    # A retry of the same batch writes no entry, but still a counter WAIT can confirm.
    assert processor.publish(events) == (0, 30)
    assert _counters(client, settings.streams.shards) == before + 2


def test_a_short_replica_count_is_not_a_success(settings: Settings) -> None:
    proc = Processor(settings.updated({"redis_min_replicas": 3, "redis_wait_timeout_ms": 100}))
    try:
        with pytest.raises(ReplicaShortfall, match="2 of 3 replicas"):
            proc.publish(_events(5))
    finally:
        proc.close()


def test_the_client_follows_a_failover_without_a_restart(
    ha_stack: HaStackManager, settings: Settings
) -> None:
    ha_settings = settings
    client = redis_adapter.client(ha_settings, timeout=2)
    key = f"bp-test:failover:{uuid.uuid4().hex}"
    client.set(key, "before")
    old = primary_address(ha_settings)
    sentinel = redis.Redis(host=ha_stack.topology.node("s", 1).ip, port=26379)
    wait_for_a_promotable_replica(sentinel, ha_settings.redis.service)
    assert sentinel.sentinel_failover(ha_settings.redis.service)
    new = wait_for_new_primary(ha_settings, old)
    client.set(key, "after")  # the same client object: no restart, no error
    assert client.get(key) == "after"
    server = redis.Redis(host=new[0], port=new[1])
    assert server.info("replication")["role"] == "master"
    assert client.wait(2, 10_000) == 2
