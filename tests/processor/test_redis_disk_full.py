"""A Redis whose disk is full, for real: its append-only file on a small tmpfs, filled to the brim.

Redis then refuses every write (``MISCONF``) until an AOF write succeeds again. The processor must
wait that out like any outage: no marker without its entry, no exit, and the batch goes through
once space is freed. (Before, ``MISCONF`` was not among the errors it retried: it exited.)
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.processor.service import Processor
from tests.stack_helpers import fill_redis_disk

pytestmark = pytest.mark.integration


def test_the_processor_waits_out_a_full_disk_and_publishes_once_there_is_room(
    redis_on_small_disk: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = redis_on_small_disk
    settings = Settings(state_dir=tmp_path, redis_url=url)  # Kafka is never reached: publish only
    client = redis.Redis.from_url(url)
    ballast = fill_redis_disk(client, data)
    now = int(time.time() * 1000)
    events = [
        ScanEvent(f"880{i:010d}", "SEOUL-CENTER-PC-001", now - 1000 + i, f"full-{i}") for i in range(50)
    ]
    proc = Processor(settings)
    outcome: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            outcome.append(proc._publish_with_retry(events, [now] * len(events)))
        except BaseException as exc:  # the failure this test is about
            errors.append(exc)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    time.sleep(3)
    assert not errors, f"the processor gave up on a full disk: {errors[0]!r}"
    assert thread.is_alive() and not outcome, "published although Redis refuses writes?"
    assert client.keys("barcode:seen:*") == [], "a marker was written without its entry"
    ballast.unlink()  # room again: Redis's next AOF write succeeds and writes are accepted
    thread.join(30)
    proc.stop_event.set()
    assert not errors, f"{errors[0]!r}"
    assert outcome == [(50, 0)]
    assert sum(client.xlen(f"barcode:stream:{s}") for s in range(settings.streams.shards)) == 50
    proc.close()
    client.close()
