"""The processor on the real Kafka and Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import named_fields
from barcode_pipeline.errors import DeliveryError
from barcode_pipeline.processor.replay import replay
from barcode_pipeline.processor.routing import shard_of
from barcode_pipeline.processor.service import Processor
from tests.kafka_helpers import start_group_at_log_end
from tests.stack_helpers import ScratchRedis, redis_db, wait_until

pytestmark = pytest.mark.integration

REDIS_DB = 6  # this module's own Redis database, so other suites never see its streams
RECENT_MS = int(time.time() * 1000) - 60_000  # within the dedup window: resends stop at the markers


@pytest.fixture
def settings(make_settings: Callable[..., Settings], stack_settings: Settings) -> Iterator[Settings]:
    s = make_settings(redis_url=redis_db(stack_settings.redis.url, REDIS_DB))
    kafka_adapter.ensure_topics(s)
    r = redis.Redis.from_url(s.redis.url)
    r.flushdb()
    yield s
    r.flushdb()
    r.close()


def _produce(settings: Settings, values: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    """Produce and return (partition, offset) of each record."""
    p = Producer(kafka_adapter.producer_config(settings))
    placed: list[tuple[int, int]] = []
    for key, value in values:
        p.produce(
            names.TOPIC, value, key=key, on_delivery=lambda e, m: placed.append((m.partition(), m.offset()))
        )
    assert p.flush(10) == 0
    return placed


def _scan(device: str, i: int, scan_id: str | None = None) -> tuple[bytes, bytes]:
    body = {"barcode": f"880{i:010d}", "deviceId": device, "scanTime": RECENT_MS + i,
            "scanId": scan_id or f"{device}-{i}"}  # fmt: skip
    return device.encode(), orjson.dumps(body)


def _entries_for(r: redis.Redis, settings: Settings, device: str) -> list[Any]:
    stream = names.stream_name(shard_of(device, settings.streams.shards))
    scans = (named_fields(fields) for _id, fields in r.xrange(stream))
    return [scan for scan in scans if scan["dev"] == device]


def _run_until(proc: Processor, done: Callable[[], bool], timeout: float = 30) -> None:
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert time.monotonic() < deadline, "processor did not finish in time"
            time.sleep(0.1)
    finally:
        proc.stop()
        thread.join(15)


def _group(tag: str, settings: Settings | None = None) -> str:
    """A fresh consumer group; with ``settings`` it starts at the log end, not at the topic's history."""
    group = f"test-processor-{tag}-{uuid.uuid4().hex[:8]}"
    if settings is not None:
        start_group_at_log_end(settings, group)
    return group


def test_events_reach_their_shard_in_device_order(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("order", settings)
    _produce(settings, [_scan(device, i) for i in range(300)])
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    _run_until(Processor(settings, group=group), lambda: len(_entries_for(r, settings, device)) >= 300)
    entries = _entries_for(r, settings, device)
    assert len(entries) == 300
    assert [int(e["st"]) for e in entries] == sorted(int(e["st"]) for e in entries)
    assert all(e["id"].startswith(f"DLV-{device}-") for e in entries)


def test_same_event_five_times_is_published_once(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("dup", settings)
    _produce(settings, [_scan(device, 1, scan_id="same")] * 5 + [_scan(device, 2)])
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    proc = Processor(settings, group=group)
    _run_until(proc, lambda: len(_entries_for(r, settings, device)) >= 2)
    time.sleep(0.5)
    assert sorted(e["sid"] for e in _entries_for(r, settings, device)) == [f"{device}-2", "same"]


def test_poison_goes_to_dlt_and_the_pipeline_goes_on(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex.encode()
    group = _group("poison", settings)
    _produce(settings, [(device.encode(), b"\xff\xfe" + marker), _scan(device, 7)])
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    _run_until(Processor(settings, group=group), lambda: len(_entries_for(r, settings, device)) == 1)

    c = Consumer(kafka_adapter.consumer_config(settings, _group("dlt-reader")))
    c.subscribe([names.DLT_TOPIC])
    found = None
    deadline = time.monotonic() + 20
    while found is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error() and marker in bytes(msg.value() or b""):
            found = dict(msg.headers() or [])
    c.close()
    assert found is not None, "poison record not on the DLT"
    assert b"undecodable" in found[names.DLT_REASON_HEADER]
    assert found[names.DLT_ORIGIN_HEADER].startswith(names.TOPIC.encode())


def test_redis_down_commits_nothing(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("redis-down", settings)
    [(partition, offset)] = _produce(settings, [_scan(device, 1)])
    dead = settings.updated({"redis_url": "redis://127.0.0.1:1/0"})
    proc = Processor(dead, group=group)
    proc.consumer.subscribe([names.TOPIC])
    stopper = threading.Timer(2.0, proc.stop)
    stopper.start()
    with pytest.raises(DeliveryError):
        while True:
            proc._step()
    proc.close()
    c = Consumer(kafka_adapter.consumer_config(settings, group))
    [committed] = c.committed([TopicPartition(names.TOPIC, partition)], timeout=10)
    c.close()
    # Batches made only of other suites' poison records may commit; nothing may pass our event.
    assert committed.offset <= offset, (committed, offset)


def test_replay_since_redrives_after_redis_loss(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("pre", settings)
    since = int(time.time() * 1000)
    _produce(settings, [_scan(device, i) for i in range(20)])
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    _run_until(Processor(settings, group=group), lambda: len(_entries_for(r, settings, device)) == 20)
    r.flushdb()  # Redis lost everything, markers included
    outcome = replay(settings, since_ms=since)
    assert outcome.published >= 20
    assert len(_entries_for(r, settings, device)) == 20
    again = replay(settings, since_ms=since)  # markers are back: a second replay adds nothing
    assert again.published == 0
    assert len(_entries_for(r, settings, device)) == 20


def test_a_static_member_killed_and_restarted_resumes_without_waiting_for_its_session(
    settings: Settings, tmp_path: Any
) -> None:
    """With a 60 s session a dynamic member's successor would wait about that long to be assigned."""
    import os
    import signal
    import subprocess
    import sys

    from barcode_pipeline.config import settings_env

    s = settings.updated({"processor_group": _group("static", settings), "kafka_session_timeout_ms": 60_000})
    env = {**os.environ, **settings_env(s)}
    device = f"T-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(s.redis.url, decode_responses=True)
    log = (tmp_path / "processor.log").open("wb")

    def spawn() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "barcode_pipeline", "processor", "--instance", "p-static"]
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_for(n: int, timeout: float) -> float:
        t0 = time.monotonic()
        while len(_entries_for(r, s, device)) < n:
            assert time.monotonic() - t0 < timeout, (tmp_path / "processor.log").read_text()[-3000:]
            time.sleep(0.1)
        return time.monotonic() - t0

    first = spawn()
    try:
        _produce(s, [_scan(device, i) for i in range(5)])
        wait_for(5, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = spawn()
        try:
            _produce(s, [_scan(device, i) for i in range(5, 10)])
            took = wait_for(10, 40)  # well under the 60 s session
            assert len(_entries_for(r, s, device)) == 10
        finally:
            second.terminate()
            assert second.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
        log.close()
    assert took < 40


def _committed_past(settings: Settings, group: str, placed: list[tuple[int, int]]) -> bool:
    """Whether ``group`` has committed beyond every record in ``placed``."""
    c = Consumer(kafka_adapter.consumer_config(settings, group))
    try:
        wanted = {p: max(o for q, o in placed if q == p) for p, _ in placed}
        tps = c.committed([TopicPartition(names.TOPIC, p) for p in wanted], timeout=10)
        return all(tp.offset > wanted[tp.partition] for tp in tps)
    finally:
        c.close()


@pytest.mark.parametrize("processor", ["kept", "restarted"])
def test_a_redis_back_without_its_last_writes_gets_them_again(
    scratch_redis: ScratchRedis, make_settings: Callable[..., Settings], tmp_path: Any, processor: str
) -> None:
    """Redis answered, the offsets were committed, then Redis came back without those writes: with
    ``appendfsync everysec`` an AOF write waits behind a running fsync while the answers go out, and a
    crash then loses it. The processor, still running or restarted meanwhile, notices the server's
    new run id (or the commit mark of the old one) and publishes those scans again, once."""
    settings = make_settings(redis_url=scratch_redis.url)
    device = f"T-{uuid.uuid4().hex[:8]}"
    group = _group("lost-tail", settings)
    r = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    proc = Processor(settings, group=group)
    thread = threading.Thread(target=proc.run, daemon=True)
    thread.start()
    try:
        first = _produce(settings, [_scan(device, i) for i in range(5)])
        wait_until(
            lambda: len(_entries_for(r, settings, device)) == 5, 30, "the first 5 published", interval=0.2
        )
        wait_until(lambda: _committed_past(settings, group, first), 30, "the first 5 committed", interval=0.2)
        kept = scratch_redis.snapshot(tmp_path / "kept")
        second = _produce(settings, [_scan(device, i) for i in range(5, 10)])
        wait_until(
            lambda: len(_entries_for(r, settings, device)) == 10, 30, "the next 5 published", interval=0.2
        )
        wait_until(lambda: _committed_past(settings, group, second), 30, "the next 5 committed", interval=0.2)
        if processor == "restarted":
            proc.stop()
            thread.join(15)
        scratch_redis.restart_from(kept)
        assert len(_entries_for(r, settings, device)) == 5, "the restarted Redis should lack the last 5"
        if processor == "restarted":
            proc = Processor(settings, group=group)
            thread = threading.Thread(target=proc.run, daemon=True)
            thread.start()
        wait_until(
            lambda: len(_entries_for(r, settings, device)) >= 10,
            30,
            "the lost 5 published again",
            interval=0.2,
        )
        time.sleep(1.5)  # a second rewind would publish nothing new either: markers
        assert sorted(s["sid"] for s in _entries_for(r, settings, device)) == sorted(
            f"{device}-{i}" for i in range(10)
        )
        assert proc.totals.rewound >= 5
    finally:
        proc.stop()
        thread.join(15)
        r.close()


def test_partitions_given_back_are_looked_at_again(make_settings: Callable[..., Settings]) -> None:
    """A partition revoked and assigned again within one ``consume()`` never leaves the assignment
    set, and another member may have committed there meanwhile (with another Redis server's mark): the
    assignment callback makes the processor read those partitions' commit marks again."""
    settings = make_settings()
    proc = Processor(settings, group=_group("given-back", settings))
    try:
        proc._subscribe()
        wait_until(lambda: bool(proc.consumer.consume(1, 0.2) is not None and proc.consumer.assignment()),
                   30, "a first assignment")  # fmt: skip
        held = {tp.partition for tp in proc.consumer.assignment()}
        assert proc.marks.unread == held  # the group gave them: their marks are to be read
        proc.marks.unread.clear()  # their marks were read
        proc.consumer.unsubscribe()  # revoked and assigned again, with no look at the marks between
        wait_until(lambda: bool(proc.consumer.consume(1, 0.2) is not None and not proc.consumer.assignment()),
                   30, "the partitions revoked")  # fmt: skip
        assert proc.marks.unread == set()
        proc._subscribe()
        wait_until(lambda: bool(proc.consumer.consume(1, 0.2) is not None and proc.consumer.assignment()),
                   30, "the partitions back")  # fmt: skip
        assert proc.marks.unread == held, "partitions given back would not be looked at again"
        _inherited, taken = proc.marks.inherited(proc.consumer, "another-run-id")
        assert taken == held
    finally:
        proc.close()


def test_a_replay_ignores_its_groups_old_commit_marks(settings: Settings) -> None:
    """A replay reads a fixed range from explicit offsets: earlier replays' commits, marked by a Redis
    server long gone, must not rewind it to their safe offsets (it re-read millions of records)."""
    from barcode_pipeline.processor.failover import CommitMark

    device = f"T-{uuid.uuid4().hex[:8]}"
    since = int(time.time() * 1000)
    _produce(settings, [_scan(device, i) for i in range(20)])
    c = Consumer(kafka_adapter.consumer_config(settings, names.replay_group(settings.processor.group)))
    gone = CommitMark("a-server-long-gone", 0).encode()
    marked = [
        TopicPartition(names.TOPIC, p, 1, metadata=gone) for p in range(settings.kafka.topic_partitions)
    ]
    c.commit(offsets=marked, asynchronous=False)
    c.close()
    outcome = replay(settings, since_ms=since)
    assert outcome.rewound == 0 and outcome.published + outcome.duplicates < 5_000, outcome
