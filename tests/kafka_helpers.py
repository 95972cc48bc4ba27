"""Kafka helpers for tests that run a pipeline on the shared topic."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings


def start_group_at_log_end(settings: Settings, group: str) -> None:
    """Commit ``group``'s offsets at the topic's current end, so it skips earlier suites' records.

    A real new group starts at the earliest offset (nothing may be skipped); a test only wants its own.
    """
    kafka_adapter.ensure_topics(settings)
    consumer = Consumer(kafka_adapter.consumer_config(settings, group))
    try:
        ends = []
        for partition in range(settings.topic_partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(names.TOPIC, partition), timeout=10)
            ends.append(TopicPartition(names.TOPIC, partition, high))
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()
