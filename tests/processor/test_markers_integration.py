"""The publish script's duplicate markers on the real Redis: compact, atomic, and honouring the old ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import redis

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.processor.markers import legacy_key, legacy_markers_present
from barcode_pipeline.processor.service import Processor
from tests.stack_helpers import redis_db

pytestmark = pytest.mark.integration

REDIS_DB = 7  # this module's own database


@pytest.fixture
def settings(make_settings: Callable[..., Settings], stack_settings: Settings) -> Iterator[Settings]:
    s = make_settings(redis_url=redis_db(stack_settings.redis.url, REDIS_DB), dedup_buckets=2)
    client = redis.Redis.from_url(s.redis.url)
    client.flushdb()
    yield s
    client.flushdb()
    client.close()


def recent(i: int, now_ms: int) -> ScanEvent:
    minute_start = now_ms // 60_000 * 60_000
    device = "SEOUL-CENTER-PC-001"
    return ScanEvent(
        barcode=f"880{i:010d}", device_id=device, scan_time=minute_start + i % 1000, scan_id=f"m-{i}"
    )


def test_markers_stop_resends_and_stay_compact(settings: Settings) -> None:
    proc = Processor(settings)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        now = int(time.time() * 1000)
        events = [recent(i, now) for i in range(200)]
        assert proc.publish(events) == (200, 0)
        assert proc.publish([*events[:50], recent(500, now)]) == (1, 50)  # resends stop, a new scan passes
        keys = sorted(client.scan_iter(match=f"{names.DEDUP_PREFIX}*"))
        assert len(keys) == 2  # two buckets for the minute (dedup_buckets=2)
        for key in keys:
            # 100 fields each: under hash-max-listpack-entries, so the compact encoding
            assert client.object("encoding", key) == b"listpack"
            ttl = client.ttl(key)
            assert settings.dedup.window_s - 120 < ttl <= settings.dedup.window_s + 60
        assert sum(client.xlen(s) for s in names.all_streams(settings.streams.shards)) == 201
    finally:
        proc.close()
        client.close()


def test_a_scan_older_than_the_window_is_published_without_a_marker(settings: Settings) -> None:
    proc = Processor(settings.updated({"dedup_window_s": 3600}))
    client = redis.Redis.from_url(settings.redis.url)
    try:
        old = replace(recent(1, int(time.time() * 1000)), scan_time=int(time.time() * 1000) - 2 * 3600_000)
        assert proc.publish([old, old]) == (2, 0)  # both reach the streams; the UNIQUE key takes the second
        assert list(client.scan_iter(match=f"{names.DEDUP_PREFIX}*")) == []
    finally:
        proc.close()
        client.close()


def test_legacy_markers_are_honoured_after_an_upgrade(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis.url)
    event = recent(7, int(time.time() * 1000))
    assert not legacy_markers_present(client)
    client.set(legacy_key(event, "event"), "1", ex=600)  # written by the release before the hashes
    assert legacy_markers_present(client)
    proc = Processor(settings)  # dedup_legacy_markers=auto: finds it at the first publish
    try:
        assert proc.publish([event, replace(event, scan_id="new")]) == (1, 1)
        assert proc.legacy_markers is True
    finally:
        proc.close()
        client.close()


def test_a_full_redis_refuses_the_publish_whole(settings: Settings) -> None:
    """Redis at maxmemory refuses the call before any write: no marker without its entry."""
    proc = Processor(settings)
    client = redis.Redis.from_url(settings.redis.url)
    old = client.config_get("maxmemory")["maxmemory"]
    events = [recent(i, int(time.time() * 1000)) for i in range(20)]
    try:
        client.config_set("maxmemory", "1mb")
        with pytest.raises(redis.OutOfMemoryError):
            proc.publish(events)
        assert list(client.scan_iter(match=f"{names.DEDUP_PREFIX}*")) == []
        assert sum(client.xlen(s) for s in names.all_streams(settings.streams.shards)) == 0
    finally:
        client.config_set("maxmemory", old)
    try:
        assert proc.publish(events) == (20, 0)  # and goes through once there is room
    finally:
        proc.close()
        client.close()
