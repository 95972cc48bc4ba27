"""Rewinding a consumer group, on the shared stack's real Kafka (a topic and group of the test's own)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.cimpl import NewTopic

from barcode_harness.chaos import faults
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import PipelineError
from tests.stack_helpers import retry_until

pytestmark = pytest.mark.integration


def test_a_group_rewinds_to_given_offsets_or_to_the_log_start(stack_settings: Settings) -> None:
    topic, group = f"test-rewind-{uuid.uuid4().hex[:8]}", f"test-rewind-{uuid.uuid4().hex[:8]}"
    admin = kafka_adapter.admin(stack_settings)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    try:
        producer = Producer(kafka_adapter.producer_config(stack_settings))
        for i in range(5):
            producer.produce(topic, b"x", partition=i % 2)  # 3 records in partition 0, 2 in 1
        assert producer.flush(30) == 0
        before = faults.end_offsets(stack_settings, topic)
        assert before == {0: 3, 1: 2}
        consumer = Consumer(kafka_adapter.consumer_config(stack_settings, group, log_level=0))
        try:
            offsets = [TopicPartition(topic, p, o) for p, o in before.items()]
            consumer.commit(offsets=offsets, asynchronous=False)
        finally:
            consumer.close()

        backlog = faults.rewind_group(stack_settings, group, to={0: 1, 1: 2}, topic=topic)
        assert backlog == 2 and _committed(stack_settings, group, topic) == {0: 1, 1: 2}

        backlog = faults.rewind_group(stack_settings, group, topic=topic)  # to the log start
        assert backlog == 3 and _committed(stack_settings, group, topic) == {0: 0, 1: 0}
    finally:
        admin.delete_topics([topic])[topic].result(30)


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(kafka_adapter.consumer_config(settings, group, log_level=0))
    try:
        tps = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def test_a_full_disk_fault_refuses_the_root_disk_and_fills_a_server_s_own(
    redis_on_small_disk: tuple[str, Path],
) -> None:
    """The nemesis's disk-full fault on a real server's disk: Redis refuses writes while the ballast
    is there and takes them again once it is gone; the machine's own disk is never filled."""
    with pytest.raises(PipelineError, match="root filesystem"):
        faults.fill_disk(Path(tempfile.gettempdir()))
    url, data = redis_on_small_disk
    client = redis.Redis.from_url(url)
    try:
        ballast, size = faults.fill_disk(data)
        assert size > 10 * 2**20 and os.statvfs(data).f_bavail == 0
        with pytest.raises(redis.ResponseError, match="MISCONF"):
            for i in range(10_000):
                client.set(f"k{i}", b"x" * 4096)
        ballast.unlink(missing_ok=True)
        # Redis retries its AOF write every second and lifts the refusal itself
        retry_until(lambda: client.set("after", b"1"), redis.ResponseError,
                    "Redis still refuses writes with the disk free again")  # fmt: skip
    finally:
        client.close()
