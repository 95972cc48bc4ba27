"""A Redis whose disk is full, for real: its append-only file on a small tmpfs, filled to the brim.

Redis then refuses every write (``MISCONF``) until an AOF write succeeds again. The processor must
wait that out like any outage: no marker without its entry, no exit, and the batch goes through
once space is freed. (Before, ``MISCONF`` was not among the errors it retried: it exited.)
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.processor.service import Processor
from tests.stack_helpers import free_ports

pytestmark = pytest.mark.integration

TMPFS_BYTES = 16 * 2**20


@pytest.fixture
def redis_on_small_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scratch redis-server (AOF on, ``appendfsync everysec`` as the stack runs it) on a 16 MiB tmpfs.

    (With ``always`` Redis exits on a failed AOF write instead of refusing writes.)"""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(data)], check=True)
    port = free_ports()
    server = shutil.which("redis-server")
    assert server, "redis-server not found: run scripts/setup.sh"
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--auto-aof-rewrite-percentage", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "scratch redis-server did not start"
                time.sleep(0.1)
        client.close()
        yield url, data
    finally:
        proc.kill()
        proc.wait(10)
        subprocess.run(["umount", str(data)], check=False)


def test_the_processor_waits_out_a_full_disk_and_publishes_once_there_is_room(
    redis_on_small_disk: tuple[str, Path], tmp_path: Path
) -> None:
    url, data = redis_on_small_disk
    settings = Settings(state_dir=tmp_path, redis_url=url)  # Kafka is never reached: publish only
    client = redis.Redis.from_url(url)
    ballast = data / "ballast"
    # fill the disk: a ballast file leaves a little room, which the AOF then fills
    ballast.write_bytes(b"\0" * (TMPFS_BYTES - 2 * 2**20))
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        for i in range(100_000):
            client.set(f"fill:{i}", b"x" * 4096)
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
    assert sum(client.xlen(f"barcode:stream:{s}") for s in range(settings.stream_shards)) == 50
    proc.close()
    client.close()
