"""Every Kafka topic, consumer group, Redis key and stream name, in one place.

Operators grep for these; tests and tools must never spell them out again.
"""

from __future__ import annotations

from enum import StrEnum

# Kafka
TOPIC = "barcode-events"
DLT_TOPIC = "barcode-events.dlt"
PROCESSOR_GROUP = "barcode-processor"
REPLAY_GROUP_SUFFIX = "-replay"  # `replay` consumes as "<processor group>-replay", apart from the live group
TOOL_GROUP_PREFIX = "barcode-dlq-tool-"  # + a random id: read-only consumers of the tools, never committed

# Redis Streams
STREAM_PREFIX = "barcode:stream:"
WORKER_GROUP = "barcode-persistence"
DLQ_STREAM = "barcode:dlq"

# Redis keys
DEDUP_PREFIX = "barcode:seen:"  # + "h{e|b}:{minute}:{bucket}", a hash of markers (processor/markers.py)
# One string key per scan ("e:{deviceId}:{scanId}" or "b:{barcode}"), as releases before the hashes wrote.
LEGACY_MARKER_PATTERN = "barcode:seen:[eb]:*"
HEARTBEAT_PREFIX = "barcode:worker:hb:"  # + consumer name, short TTL while the worker lives
PUBLISH_COUNTER_PREFIX = "barcode:published:"  # + shard; bumped by every publish (lua/dedupe_publish.lua)
RETENTION_LOCK = "barcode:retention:lock"  # held (SET NX, TTL) by the `run` doing a partition round
RATE_LIMIT_PREFIX = "barcode:rate:"  # + "{key name}:{window}"; scans admitted (auth/ratelimit.py)
NODE_LEASE_PREFIX = "barcode:node:"  # + node name; held (SET NX, TTL) by the one `run` of that node

# Redis Sentinel: the monitored primary's service name
REDIS_SERVICE = "barcode-redis"

# The wire API (ingest and the legacy baseline serve the same routes; scanners post to them)
ROUTE_SCAN = "/ingest/barcode"  # one scan
ROUTE_BATCH = "/ingest/barcodes"  # a JSON array of scans
ROUTE_HEALTH = "/health"
ROUTE_READY = "/ready"
ROUTE_METRICS = "/metrics"
ROUTE_DOCS = "/docs"  # Swagger UI, its assets served by the service itself (no third-party host)
ROUTE_DOCS_ASSETS = "/docs-assets"
ROUTE_REDOC = "/redoc"

# Prometheus job names of the pipeline's own endpoints (monitoring/targets.py, deploy/prometheus/).
JOB_INGEST = "bp-ingest"
JOB_SUPERVISOR = "bp-supervisor"
JOB_PROCESSOR = "bp-processor"
JOB_WORKER = "bp-worker"
JOB_BACKLOG = "bp-backlog"
JOB_LEGACY = "bp-legacy"


class Role(StrEnum):
    """The kinds of service ``run`` supervises; their values are the CLI sub-commands and the
    metrics/log names."""

    INGEST = "ingest"
    PROCESSOR = "processor"
    WORKER = "worker"
    LEGACY = "legacy"


# Kafka DLT headers
DLT_REASON_HEADER = "bp-reason"
DLT_ORIGIN_HEADER = "bp-origin"  # "topic/partition/offset" of the poison record
DLT_REPLAYED_FROM_HEADER = "bp-replayed-from"  # set on records re-produced from the DLT


def stream_name(shard: int) -> str:
    """Redis stream of one shard."""
    return f"{STREAM_PREFIX}{shard}"


def all_streams(shards: int) -> list[str]:
    return [stream_name(i) for i in range(shards)]


def replay_group(processor_group: str) -> str:
    return f"{processor_group}{REPLAY_GROUP_SUFFIX}"


def tool_group(suffix: str) -> str:
    return f"{TOOL_GROUP_PREFIX}{suffix}"


def dedup_bucket_key(policy: str, minute: int, bucket: int) -> str:
    """A hash of duplicate markers: policy (e or b), epoch minute of the scan time, bucket number.
    The ``h`` keeps the name apart from every legacy marker (``e:`` or ``b:``), whatever the IDs."""
    return f"{DEDUP_PREFIX}h{policy[0]}:{minute}:{bucket}"


def heartbeat_key(consumer: str) -> str:
    return f"{HEARTBEAT_PREFIX}{consumer}"


def publish_counter(shard: int) -> str:
    """Counter every publish call bumps, so a WAIT after it proves the call's earlier writes too."""
    return f"{PUBLISH_COUNTER_PREFIX}{shard}"


def rate_limit_key(principal: str, window: int) -> str:
    """Scans every ingest process admitted for one key (or trusted network) in one window."""
    return f"{RATE_LIMIT_PREFIX}{principal}:{window}"


def node_lease_key(node: str) -> str:
    """The lease a ``run`` holds for its node name, so a second ``run`` with that name is refused."""
    return f"{NODE_LEASE_PREFIX}{node}"


def node_member(node: str, service: str) -> str:
    """A processor's static member id or a worker's consumer name: unique per node and service.

    ``.`` is legal in both a Kafka ``group.instance.id`` and a Redis consumer name."""
    return f"{node}.{service}"
