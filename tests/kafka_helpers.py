"""Kafka helpers for tests that run a pipeline on the shared topic."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

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
        for attempt in range(50):  # a just-created topic may answer NOT_LEADER for a moment
            try:
                ends = []
                for partition in range(settings.kafka.topic_partitions):
                    tp = TopicPartition(names.TOPIC, partition)
                    _low, high = consumer.get_watermark_offsets(tp, timeout=10)
                    ends.append(TopicPartition(names.TOPIC, partition, high))
                consumer.commit(offsets=ends, asynchronous=False)
                return
            except KafkaException:
                if attempt == 49:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
