"""Every Kafka topic, consumer group, Redis key and stream name, in one place.

Operators grep for these; tests and tools must never spell them out again.
"""

from __future__ import annotations

# Kafka
TOPIC = "barcode-events"
DLT_TOPIC = "barcode-events.dlt"
PROCESSOR_GROUP = "barcode-processor"

# Redis Streams
STREAM_PREFIX = "barcode:stream:"
WORKER_GROUP = "barcode-persistence"
DLQ_STREAM = "barcode:dlq"

# Redis keys
DEDUP_PREFIX = "barcode:seen:"  # + "e:{deviceId}:{scanId}" or "b:{barcode}"
HEARTBEAT_PREFIX = "barcode:worker:hb:"  # + consumer name, short TTL while the worker lives
PUBLISH_COUNTER_PREFIX = "barcode:published:"  # + shard; bumped by every publish (lua/dedupe_publish.lua)

# Redis Sentinel: the monitored primary's service name
REDIS_SERVICE = "barcode-redis"

# Kafka DLT headers
DLT_REASON_HEADER = "bp-reason"
DLT_ORIGIN_HEADER = "bp-origin"  # "topic/partition/offset" of the poison record


def stream_name(shard: int) -> str:
    """Redis stream of one shard."""
    return f"{STREAM_PREFIX}{shard}"


def all_streams(shards: int) -> list[str]:
    return [stream_name(i) for i in range(shards)]


def heartbeat_key(consumer: str) -> str:
    return f"{HEARTBEAT_PREFIX}{consumer}"


def publish_counter(shard: int) -> str:
    """Counter every publish call bumps, so a WAIT after it proves the call's earlier writes too."""
    return f"{PUBLISH_COUNTER_PREFIX}{shard}"
