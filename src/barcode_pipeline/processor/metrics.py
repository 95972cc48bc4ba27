"""Prometheus metrics of the processor."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "bp_processor_events_total",
    "Events handled, by outcome (published; duplicate = dedup hit, already published; dlt = poison)",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "bp_processor_batch_size", "Kafka records per batch", buckets=(1, 10, 50, 100, 250, 500, 1000, 2000)
)
PUBLISH_SECONDS = Histogram(
    "bp_processor_publish_seconds",
    "Time to dedup+publish one batch to Redis",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REDIS_FAILURES = Counter("bp_processor_redis_failures_total", "Failed attempts to publish a batch to Redis")
REDIS_FULL = Counter(
    "bp_processor_redis_full_total", "Publish attempts Redis refused for lack of memory (OOM; retried)"
)
COMMIT_FAILURES = Counter(
    "bp_processor_commit_failures_total", "Offset commits that failed (batch redelivered)"
)
CONSUMER_REPLACEMENTS = Counter(
    "bp_processor_consumer_replacements_total", "Kafka consumers replaced after a fatal error (fenced)"
)
LAG = Gauge("bp_processor_consumer_lag", "Records behind the log end, per partition", ["partition"])
REPLICA_SHORTFALLS = Counter(
    "bp_processor_replica_shortfalls_total", "Batches WAIT could not confirm on enough replicas (retried)"
)
REWINDS = Counter(
    "bp_processor_rewinds_total", "Rewinds of the group after the Redis server changed (failover or restart)"
)
REWOUND_RECORDS = Counter("bp_processor_rewound_records_total", "Records re-read because of a rewind")

# Export every outcome at 0 from the start, so dashboards and alerts see a series before the first event.
for _outcome in ("published", "duplicate", "dlt"):
    EVENTS.labels(_outcome)
