"""The Redis adapter's Lua probe on the real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.adapters.redis import WaitingProbe
from barcode_pipeline.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def streams(stack_settings: Settings) -> Iterator[tuple[redis.Redis, list[str]]]:
    client = redis_adapter.client(stack_settings)
    names = [f"test:probe:{uuid.uuid4().hex[:8]}:{i}" for i in range(3)]
    yield client, names
    client.delete(*names)
    client.close()


def test_the_probe_counts_unread_entries_and_ages_the_oldest(streams: tuple[redis.Redis, list[str]]) -> None:
    client, (a, b, missing) = streams
    probe = WaitingProbe(client, [a, b, missing], "g", cap=3)
    assert probe() == (0, -1)  # no streams yet

    client.xadd(a, {"f": "1"})
    client.xgroup_create(b, "g", id="0", mkstream=True)
    assert probe()[0] == 1  # a stream without the group: all of it is waiting
    time.sleep(0.2)
    for i in range(5):
        client.xadd(b, {"f": str(i)})
    waiting, oldest_ms = probe()
    assert waiting == 1 + 3  # counted up to the cap per stream
    assert 200 <= oldest_ms < 5000  # a's entry, the oldest

    client.xgroup_create(a, "g", id="0")
    client.xreadgroup("g", "c", {a: ">"})  # delivered (pending, not waiting)
    client.xreadgroup("g", "c", {b: ">"}, count=4)
    waiting, oldest_ms = probe()
    assert waiting == 1 and 0 <= oldest_ms < 200  # b's last entry, added after the sleep
    client.xreadgroup("g", "c", {b: ">"})
    assert probe() == (0, -1)
