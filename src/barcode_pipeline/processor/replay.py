"""``replay``: the topic's events since a time (or from given offsets) through the processor again.

Re-drives what Redis lost (a FLUSHALL, a restore from an old copy): the same dedup and publish path
as the live processor, in a consumer group of its own so the live one keeps running, up to the log
end as it was when the replay began. Idempotent by construction: markers, then the UNIQUE key.
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, TopicPartition

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.processor.service import BatchOutcome, Processor

log = logging.getLogger(__name__)


def replay(
    settings: Settings, *, since_ms: int | None = None, from_offsets: dict[int, int] | None = None
) -> BatchOutcome:
    """Re-feed events from Kafka through the same dedup+publish path, up to the current log end.

    Uses its own consumer group, so the live processor keeps running; idempotent by construction
    (dedup markers, then the UNIQUE index).
    """
    admin_consumer = Consumer(
        kafka_adapter.consumer_config(settings, f"{settings.processor.group}-replay-probe")
    )
    try:
        meta = admin_consumer.list_topics(names.TOPIC, timeout=10).topics[names.TOPIC]
        partitions = sorted(meta.partitions)
        end: dict[int, int] = {}
        for p in partitions:
            _low, high = admin_consumer.get_watermark_offsets(TopicPartition(names.TOPIC, p), timeout=10)
            end[p] = high
        if from_offsets is not None:
            start = [TopicPartition(names.TOPIC, p, from_offsets.get(p, end[p])) for p in partitions]
        else:
            query = [TopicPartition(names.TOPIC, p, since_ms or 0) for p in partitions]
            found = admin_consumer.offsets_for_times(query, timeout=10)
            start = [
                TopicPartition(names.TOPIC, tp.partition, tp.offset if tp.offset >= 0 else end[tp.partition])
                for tp in found
            ]
    finally:
        admin_consumer.close()
    proc = Processor(settings, group=names.replay_group(settings.processor.group))
    log.info("replaying %s", {tp.partition: (tp.offset, end[tp.partition]) for tp in start})
    return proc.run_range(start, end)
