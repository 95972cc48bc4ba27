"""The capacity plan: what each store holds at a given scan rate, its bound, what fills first and when.

Why a model and not a rule of thumb: every store is bounded by a setting (the duplicate window,
the stream and topic retentions, the table's retention, the DLQ's bound), so its size at a rate
is a product of measured bytes per scan and those settings. The bytes come from ``bench
footprint`` (one structure at a time) and are checked on a live run by ``bench soak``;
``docs/capacity.md`` shows both. ``barcode-pipeline capacity`` prints the plan.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from barcode_pipeline.config import Settings

DAY_S = 86_400
GIB = 1024**3
# Redis as the stacks configure it (maxmemory, auto-aof-rewrite-*): a rewrite starts once the AOF
# has doubled since the last one and is at least this big; the new base is written beside the old.
AOF_REWRITE_MIN_BYTES = 1 * GIB
KAFKA_SEGMENT_BYTES = 1 * GIB  # Kafka's default: retention deletes whole segments, the active one stays


@dataclass(frozen=True)
class PerScan:
    """Bytes a store holds per scan, measured by ``bench footprint`` on 2026-12-06 (docs/capacity.md).

    A duplicate marker costs its share of a hash plus the hash's own overhead, one hash per (scan
    minute, bucket): fitted to the measurements at 1,000 and 5,000 scans/s (21.4 and 19.0 B);
    at 100 scans/s the fit overstates the measured 43.9 B by about 10 %.
    """

    marker_field: float = 18.4
    marker_hash: float = 176.0
    stream_entry: float = 219.0
    aof: float = 649.0  # what the AOF grows by per scan between rewrites (the whole path)
    kafka_single: float = 192.0  # per record and replica, one scan per request
    kafka_batched: float = 32.0  # per record and replica, 100 scans per request
    row: float = 263.0  # data + the one secondary index, migration 0006 (26-character scan IDs)
    dlq_entry: float = 257.0


MEASURED = PerScan()


@dataclass(frozen=True)
class Bounds:
    """What each store may use, in bytes."""

    redis_memory: int  # maxmemory
    redis_disk: int  # for the AOF
    kafka_disk: int  # all brokers together
    db_disk: int


@dataclass(frozen=True)
class Line:
    """One store in the plan."""

    store: str
    per_day: float  # bytes added per day while the store is filling
    steady: float  # bytes once its window or retention is full (and the DLQ at its bound, for Redis)
    bound: int
    fills_in_days: float | None  # None: its steady state fits the bound
    change: str  # the settings that move the figure

    @property
    def share(self) -> float:
        return self.steady / self.bound if self.bound else float("inf")


def marker_bytes_per_s(rate: float, settings: Settings, per_scan: PerScan = MEASURED) -> float:
    """Redis bytes the duplicate markers add per second: fields, and a hash per minute and bucket used."""
    hashes_per_s = min(settings.dedup.buckets, rate * 60) / 60
    return rate * per_scan.marker_field + hashes_per_s * per_scan.marker_hash


def _gib(value: float) -> str:
    return f"{value / GIB:,.1f} GiB"


def _fills(per_day: float, steady: float, bound: int) -> float | None:
    """Days until a store growing ``per_day`` passes ``bound``, if its steady state does not fit."""
    if steady <= bound:
        return None
    return bound / per_day if per_day > 0 else 0.0


def _line(store: str, per_day: float, steady: float, bound: int, change: str) -> Line:
    return Line(store, per_day, steady, bound, _fills(per_day, steady, bound), change)


def plan(
    settings: Settings,
    rate: float,
    bounds: Bounds,
    *,
    days: int | None = None,
    batch_share: float = 0.0,
    per_scan: PerScan = MEASURED,
) -> list[Line]:
    """Each store at ``rate`` unique scans/s (``batch_share`` of them sent through the batch API)."""
    retention_days = days if days is not None else settings.db.retention_days
    markers = marker_bytes_per_s(rate, settings, per_scan)
    redis_steady = (
        markers * (settings.dedup.window_s + 60)
        + rate * settings.streams.retention_s * per_scan.stream_entry
        + settings.streams.dlq_max_entries * per_scan.dlq_entry
    )
    redis_day = markers * DAY_S  # the streams and the DLQ reach their bounds within minutes
    aof_steady = max(AOF_REWRITE_MIN_BYTES, 2 * redis_steady) + redis_steady
    record = per_scan.kafka_single * (1 - batch_share) + per_scan.kafka_batched * batch_share
    kafka_day = rate * DAY_S * record * settings.kafka.topic_replication
    kafka_steady = kafka_day * settings.kafka.topic_retention_hours / 24
    partitions = settings.kafka.topic_partitions * settings.kafka.topic_replication  # replicas included
    if settings.kafka.topic_retention_bytes >= 0:
        kafka_steady = min(kafka_steady, settings.kafka.topic_retention_bytes * partitions)
    kafka_steady += KAFKA_SEGMENT_BYTES * partitions
    db_day = rate * DAY_S * per_scan.row
    # a day's partition is dropped once wholly older than the retention: up to one day more is kept
    db_steady = db_day * (retention_days + 1)
    fixed = redis_steady - markers * (settings.dedup.window_s + 60)  # streams and the DLQ at its bound
    window_fits = int((bounds.redis_memory - fixed) / markers) - 60 if markers else 0
    segments = KAFKA_SEGMENT_BYTES * settings.kafka.topic_partitions * settings.kafka.topic_replication
    hours_fit = (bounds.kafka_disk - segments) / kafka_day * 24 if kafka_day else 0.0
    days_fit = int(bounds.db_disk / db_day) - 1 if db_day else 0
    return [
        _line("Redis memory", redis_day, redis_steady, bounds.redis_memory,
              f"BP_DEDUP_WINDOW_S <= {max(0, window_fits):,} (window now {settings.dedup.window_s:,}), "
              f"or Redis maxmemory >= {_gib(redis_steady * 1.25)} (25 % headroom)"),
        _line("Redis AOF disk (peak between rewrites)", rate * DAY_S * per_scan.aof, aof_steady,
              bounds.redis_disk, f"a disk of >= {_gib(aof_steady * 1.25)} for the AOF, or less Redis memory"),
        _line("Kafka disk (all replicas)", kafka_day, kafka_steady, bounds.kafka_disk,
              f"BP_TOPIC_RETENTION_HOURS <= {max(0.0, hours_fit):,.0f} "
              f"(now {settings.kafka.topic_retention_hours:g}), or BP_TOPIC_RETENTION_BYTES, or more disk"),
        _line("database disk", db_day, db_steady, bounds.db_disk,
              _db_advice(settings, days_fit, retention_days, db_steady)),
    ]  # fmt: skip


def _db_advice(settings: Settings, days_fit: int, retention_days: int, steady: float) -> str:
    disk = f"a disk of >= {_gib(steady * 1.25)}"
    if days_fit <= settings.ingest.scan_max_age_days:  # the retention must keep every scan ingest accepts
        return f"{disk} (a retention of {days_fit} days would not exceed BP_SCAN_MAX_AGE_DAYS)"
    return f"BP_DB_RETENTION_DAYS <= {days_fit:,} (--days; now {retention_days}), or {disk}"


def fills_first(lines: list[Line]) -> Line | None:
    """The store that passes its bound soonest, or None when every steady state fits."""
    filling = [line for line in lines if line.fills_in_days is not None]
    return min(filling, key=lambda line: line.fills_in_days or 0.0) if filling else None


def to_dict(lines: list[Line]) -> list[dict[str, Any]]:
    return [{**asdict(line), "share": round(line.share, 4)} for line in lines]


def summary(lines: list[Line]) -> str:
    """One sentence: what fills first and when, or how full the fullest store gets."""
    first = fills_first(lines)
    if first is None:
        largest = max(lines, key=lambda line: line.share)
        return f"nothing fills: the fullest store is {largest.store} at {largest.share:.0%} of its bound"
    return f"fills first: {first.store}, in {first.fills_in_days:,.1f} days; change {first.change}"


def markdown(plans: dict[float, list[Line]]) -> str:
    """The plans as Markdown tables, one per rate (docs/capacity.md shows them)."""
    out: list[str] = []
    for rate, lines in plans.items():
        out += [
            f"**{rate:,g} scans/s**: {summary(lines)}.",
            "",
            "| store | written per day | held at its window / retention | bound | fills |",
            "|---|---|---|---|---|",
            *(
                f"| {line.store} | {_gib(line.per_day)} | {_gib(line.steady)} | {_gib(line.bound)} | "
                + ("never" if line.fills_in_days is None else f"**in {line.fills_in_days:,.1f} days**")
                + f" ({line.share:.0%}) |"
                for line in lines
            ),
            "",
        ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- CPU
@dataclass(frozen=True)
class StageCpu:
    """Microseconds of CPU per scan, by stage: ``bench max`` (docs/benchmarks.md, 2026-12-07, one
    produce request in flight) at its search step nearest 5,000 scans/s, on a 2-core machine with
    everything co-located and Kafka at replication factor 1. Lower rates cost more per scan (fixed
    costs spread over fewer scans, fewer scans sharing a produce request)."""

    ingest: float
    processor: float
    workers: float
    kafka: float
    redis: float
    mariadb: float


CPU_SINGLE = StageCpu(ingest=164.6, processor=26.3, workers=21.1, kafka=94.5, redis=19.1, mariadb=10.5)
CPU_BATCH = StageCpu(ingest=20.3, processor=26.8, workers=20.9, kafka=22.1, redis=18.9, mariadb=10.2)
HEADROOM = 0.3  # of each core kept free: a peak's bursts, a restart's catch-up, a rebalance
REDIS_CORE = 1.0  # Redis executes commands on one thread: one primary never uses more than a core


@dataclass(frozen=True)
class CpuLine:
    """One tier of the CPU plan: the cores it needs with the headroom kept, and on how many hosts."""

    tier: str
    us_per_scan: float
    cores: float
    hosts: int
    note: str


def cpu_plan(
    settings: Settings,
    rate: float,
    *,
    batch_share: float = 0.0,
    host_cores: int = 8,
    headroom: float = HEADROOM,
) -> list[CpuLine]:
    """Cores each tier needs for ``rate`` scans/s, and hosts of ``host_cores`` cores: the app hosts
    (ingest, processor, workers: at least two, for the ha profile), the brokers (at least the
    replication factor; replicas cost the followers about what the leader spends), Redis and MariaDB."""

    def us(stage: str) -> float:
        single: float = getattr(CPU_SINGLE, stage)
        batch: float = getattr(CPU_BATCH, stage)
        return single * (1 - batch_share) + batch * batch_share

    def cores(micros: float) -> float:
        return rate * micros / 1e6 / (1 - headroom)

    app_us = us("ingest") + us("processor") + us("workers")
    kafka_us = us("kafka") * settings.kafka.topic_replication
    redis_cores = cores(us("redis"))
    mariadb_cores = cores(us("mariadb"))
    stages = f"ingest {us('ingest'):.0f}, processor {us('processor'):.0f}, workers {us('workers'):.0f} µs"
    redis_note = "within one core" if redis_cores <= REDIS_CORE else "PAST ONE CORE: Redis is the limit"
    replicas = settings.kafka.topic_replication
    return [
        CpuLine("app hosts (ingest, processor, workers)", app_us, cores(app_us),
                max(2, math.ceil(cores(app_us) / host_cores)), stages),
        CpuLine("Kafka brokers", kafka_us, cores(kafka_us),
                max(replicas, math.ceil(cores(kafka_us) / host_cores)), f"x{replicas} replicas"),
        CpuLine("Redis (one primary)", us("redis"), redis_cores, 1, redis_note),
        CpuLine("MariaDB", us("mariadb"), mariadb_cores, max(1, math.ceil(mariadb_cores / host_cores)),
                "one primary"),
    ]  # fmt: skip


def cpu_markdown(plans: dict[float, list[CpuLine]], host_cores: int) -> str:
    out: list[str] = []
    for rate, lines in plans.items():
        out += [
            f"**{rate:,g} scans/s** (hosts of {host_cores} cores, {HEADROOM:.0%} of each kept free):",
            "",
            "| tier | µs per scan | cores | hosts | note |",
            "|---|---|---|---|---|",
            *(f"| {c.tier} | {c.us_per_scan:.0f} | {c.cores:.1f} | {c.hosts} | {c.note} |" for c in lines),
            "",
        ]
    return "\n".join(out)
