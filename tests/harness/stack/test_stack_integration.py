"""The real servers of the local stack: round trips, and data kept across down + up."""

from __future__ import annotations

import uuid

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.cimpl import NewTopic

from barcode_harness.stack.manager import StackManager
from barcode_pipeline.adapters import db, kafka
from barcode_pipeline.config import Settings

pytestmark = pytest.mark.integration


def _produce(settings: Settings, topic: str, value: bytes) -> tuple[int, int]:
    out: list[tuple[int, int]] = []
    p = Producer(kafka.producer_config(settings))
    p.produce(topic, value, on_delivery=lambda err, msg: out.append((msg.partition(), msg.offset())))
    p.flush(10)
    assert out, "produce not confirmed"
    return out[0]


def _consume_at(settings: Settings, topic: str, partition: int, offset: int) -> bytes | None:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"t-{uuid.uuid4().hex}"})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        for _ in range(40):
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                return bytes(msg.value())
    finally:
        c.close()
    return None


@pytest.fixture
def topic(stack_settings: Settings) -> str:
    name = f"bp-test-{uuid.uuid4().hex[:8]}"
    admin = kafka.admin(stack_settings)  # keep the client alive until the future resolves
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(15)
    return name


def test_status_reports_all_healthy(stack_settings: Settings) -> None:
    statuses = StackManager(stack_settings).status()
    assert [s.name for s in statuses] == ["kafka", "redis", "mariadb"]
    assert all(s.healthy and s.pid for s in statuses), statuses


def test_kafka_produce_consume(stack_settings: Settings, topic: str) -> None:
    partition, offset = _produce(stack_settings, topic, b"hello")
    assert _consume_at(stack_settings, topic, partition, offset) == b"hello"


def test_redis_stream_group_roundtrip(stack_settings: Settings) -> None:
    r = redis.Redis.from_url(stack_settings.redis.url, decode_responses=True)
    stream = f"bp-test:{uuid.uuid4().hex}"
    try:
        r.xgroup_create(stream, "g", id="0", mkstream=True)
        entry_id = r.xadd(stream, {"k": "v"})
        got = r.xreadgroup("g", "c1", {stream: ">"}, count=10)
        assert got[0][1][0] == (entry_id, {"k": "v"})
        assert r.xpending(stream, "g")["pending"] == 1
        assert r.xack(stream, "g", entry_id) == 1
        assert r.xpending(stream, "g")["pending"] == 0
    finally:
        r.delete(stream)


def test_mariadb_insert_select(stack_settings: Settings) -> None:
    conn = db.connect(stack_settings.db.url)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
            cur.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            conn.commit()
            cur.execute("SELECT v FROM t ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == ["a", "b"]
    finally:
        conn.close()


def test_down_then_up_keeps_topics_streams_and_rows(stack_settings: Settings, topic: str) -> None:
    token = uuid.uuid4().hex
    partition, offset = _produce(stack_settings, topic, token.encode())
    r = redis.Redis.from_url(stack_settings.redis.url, decode_responses=True)
    stream = f"bp-test:{token}"
    r.xadd(stream, {"token": token})
    conn = db.connect(stack_settings.db.url)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS stack_probe (token CHAR(32) PRIMARY KEY)")
        cur.execute("INSERT INTO stack_probe VALUES (%s)", (token,))
    conn.commit()
    conn.close()
    r.close()

    manager = StackManager(stack_settings)
    manager.down()
    assert not any(s.running for s in manager.status())
    manager.up(quiet=True)

    assert _consume_at(stack_settings, topic, partition, offset) == token.encode()
    r = redis.Redis.from_url(stack_settings.redis.url, decode_responses=True)
    assert r.xrange(stream)[0][1] == {"token": token}
    r.delete(stream)
    conn = db.connect(stack_settings.db.url)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM stack_probe WHERE token = %s", (token,))
        assert cur.fetchone()[0] == 1
        cur.execute("DELETE FROM stack_probe WHERE token = %s", (token,))
    conn.commit()
    conn.close()
