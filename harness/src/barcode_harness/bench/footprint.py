"""``bench footprint``: what each store costs per scan, measured with the pipeline's own code.

Redis: scans through the processor's publish path, their scan times spread as ``rate`` spreads them
(the markers' density per hash depends on it), then read, acknowledged and trimmed as the workers
do; plus the workers' own dead letters. Kafka: records encoded as ingest encodes them, one per request
and 100 per request, measured on disk. The constants feed the sizing formulas in ``docs/capacity.md``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import Producer
from confluent_kafka.cimpl import NewTopic

from barcode_harness import sections
from barcode_harness.bench.docs import markers
from barcode_harness.bench.env import bench_settings, reset_redis
from barcode_harness.bench.fill import fill
from barcode_harness.bench.specs import FootprintSpec
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.manager import StackManager
from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import flat
from barcode_pipeline.db import migrate
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.domain.dead_letter import Cause, DeadLetterRecord
from barcode_pipeline.processor.service import Processor
from barcode_pipeline.worker.recovery import ensure_groups
from barcode_pipeline.worker.retention import Trimmer

FOOTPRINT_REDIS_DB = 2  # apart from the pipeline's (0) and the other benches' (1)
FOOTPRINT_DB = "bp_footprint"
# The migrations that shaped the table's footprint, measured one after the other.
TABLE_MIGRATIONS = ("0004", "0005", "0006")
TABLE_MIGRATIONS_SAY = {
    "0004": "after migration 0004 (partitioned by day)",
    "0005": "after migration 0005 (one secondary index)",
    "0006": "after migration 0006 (the guard on the scan ID)",
}
SECTION = markers("footprint")
DEVICES = 500
# The settings the sizing formulas take, kept with the figures.
SIZING_SETTINGS = ("dedup_window_s", "dedup_buckets", "topic_retention_hours", "topic_retention_bytes",
                   "stream_retention_s", "dlq_max_entries")  # fmt: skip


def _events(scans: int, rate: float, tag: str) -> list[ScanEvent]:
    """``scans`` scans whose scan times end now and are spread as ``rate`` scans/s spreads them."""
    start_ms = (time.time() - scans / rate) * 1000
    return [
        ScanEvent(
            barcode=f"88{i:011d}",
            device_id=f"FOOTPRINT-PC-{i % DEVICES:04d}",
            scan_time=int(start_ms + i * 1000 / rate),
            scan_id=f"{tag}-{i}",
        )
        for i in range(scans)
    ]


def _memory(client: redis.Redis) -> tuple[int, int]:
    """(``used_memory``, AOF size) of the server."""
    info: Any = client.info()
    return int(info["used_memory"]), int(info.get("aof_current_size", 0))


@contextmanager
def _scratch_redis(settings: HarnessSettings) -> Iterator[redis.Redis]:
    """A client on the bench's Redis database, emptied before and after."""
    reset_redis(settings)
    with closing(redis_adapter.client(settings)) as client:
        try:
            yield client
        finally:
            reset_redis(settings)


def measure_publish(settings: HarnessSettings, scans: int, rate: float) -> dict[str, Any]:
    """Markers, stream entries and AOF bytes per scan for ``scans`` scans at ``rate`` (a scratch database)."""
    without_legacy = settings.updated({"dedup_legacy_markers": "off"})
    with _scratch_redis(settings) as client, closing(Processor(without_legacy)) as proc:
        events = _events(scans, rate, uuid.uuid4().hex[:8])
        mem0, aof0 = _memory(client)
        for i in range(0, len(events), 500):
            proc.publish(events[i : i + 500])
        streams = names.all_streams(settings.streams.shards)
        stream_bytes = sum(int(client.memory_usage(s, samples=0) or 0) for s in streams)
        # the workers' side: read everything in the group, acknowledge it, trim it
        ensure_groups(client, streams, names.WORKER_GROUP)
        for stream in streams:
            while True:
                reply: Any = client.xreadgroup(names.WORKER_GROUP, "footprint", {stream: ">"}, count=1000)
                if not reply:
                    break
                client.xack(stream, names.WORKER_GROUP, *(entry_id for entry_id, _fields in reply[0][1]))
        Trimmer(client, streams, retention_s=0, exact=True)()
        mem2, aof2 = _memory(client)
        hashes = list(client.scan_iter(match=f"{names.DEDUP_PREFIX}*", count=1000))
        encodings = {str(client.object("encoding", h)) for h in hashes[:200]}
    return {
        "scans": scans,
        "rate": rate,
        "marker_bytes": (mem2 - mem0) / scans,
        "marker_hashes": len(hashes),
        "markers_per_hash": scans / max(1, len(hashes)),
        "marker_encodings": sorted(encodings),
        "stream_entry_bytes": stream_bytes / scans,
        "aof_bytes": (aof2 - aof0) / scans,
    }


def measure_dlq(settings: HarnessSettings, count: int) -> float:
    """Bytes of Redis memory per dead letter, with the workers' own record of an unmapped device."""
    with _scratch_redis(settings) as client:
        event = _events(1, 1.0, "dlq")[0]
        record = DeadLetterRecord(
            stream=names.stream_name(0), entry_id="1-0", cause=Cause.UNKNOWN_DEVICE,
            reason=f"unknown device: deviceId {event.device_id!r} has no center mapping",
            deliveries=1, consumer="footprint", time_ms=int(time.time() * 1000),
            original=((b"s", event.to_kafka_value()),),
        )  # fmt: skip
        before, _aof = _memory(client)
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.xadd(names.DLQ_STREAM, record.to_fields())  # type: ignore[arg-type]
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        return (_memory(client)[0] - before) / count


def table_bytes(conn: Any) -> tuple[int, int, dict[str, int]]:
    """(data, indexes, bytes per index) of ``barcodes``, from InnoDB's own statistics."""
    with conn.cursor() as cur:
        cur.execute("ANALYZE TABLE barcodes")
        cur.fetchall()
        cur.execute(
            "SELECT index_name, SUM(stat_value) * @@innodb_page_size FROM mysql.innodb_index_stats"
            " WHERE database_name = DATABASE() AND stat_name = 'size'"
            " AND (table_name = 'barcodes' OR table_name LIKE 'barcodes#P#%%')"
            " GROUP BY index_name"
        )
        per_index = {str(name): int(size) for name, size in cur.fetchall()}
    data = per_index.pop("PRIMARY", 0)
    return data, sum(per_index.values()), per_index


def measure_table(settings: HarnessSettings, rows: int) -> dict[str, Any]:
    """Bytes per row of ``barcodes`` (``rows`` rows over three days) after each capacity migration, and
    how long each takes on the filled table."""
    url = migrate.database_url(settings.db.url, FOOTPRINT_DB)
    migrate.drop_database(url)
    migrate.create_database(url)
    migrate.upgrade(url, before=TABLE_MIGRATIONS[0])  # the schema as releases before them left it
    fill(url, rows, days=3)
    try:
        with closing(connect(url, autocommit=True, init_command="SET time_zone = '+00:00'")) as conn:
            stages = [{"migration": None, "seconds": 0.0, **_per_row(conn, rows)}]
            for version, following in zip(TABLE_MIGRATIONS, (*TABLE_MIGRATIONS[1:], None), strict=True):
                started = time.perf_counter()
                migrate.upgrade(url, before=following)
                took = time.perf_counter() - started
                stages.append({"migration": version, "seconds": took, **_per_row(conn, rows)})
            return {"rows": rows, "stages": stages}
    finally:
        migrate.drop_database(url)


def _per_row(conn: Any, rows: int) -> dict[str, Any]:
    data, indexes, per_index = table_bytes(conn)
    per_row = {k: v / rows for k, v in per_index.items()}
    return {"data": data / rows, "indexes": indexes / rows, "per_index": per_row}


def measure_kafka(settings: HarnessSettings, spec: FootprintSpec, data_dir: Path) -> dict[str, Any]:
    """Bytes on disk per record, single (one request each) and batched (100 per request)."""
    admin = kafka_adapter.admin(settings)
    out: dict[str, Any] = {}
    for label, count, per_request in (("single", spec.kafka_single, 1), ("batched", spec.kafka_batched, 100)):
        topic = f"bp-footprint-{label}-{uuid.uuid4().hex[:6]}"
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
        linger = {"linger.ms": 0 if per_request == 1 else 5}
        producer = Producer(kafka_adapter.producer_config(settings, **linger))
        events = _events(count, 1000.0, uuid.uuid4().hex[:8])
        for i in range(0, count, per_request):
            for event in events[i : i + per_request]:
                producer.produce(topic, event.to_kafka_value(), key=event.kafka_key)
            producer.flush(15)
        size = sum(f.stat().st_size for f in (data_dir / f"{topic}-0").glob("*.log"))
        out[label] = {"records": count, "per_request": per_request, "bytes": size / count}
        admin.delete_topics([topic])[topic].result(15)
    return out


def run_footprint(
    settings: HarnessSettings, spec: FootprintSpec, folder: Path, *, start_stack: bool
) -> dict[str, Any]:
    settings = bench_settings(settings, None, fresh=True, redis_db=FOOTPRINT_REDIS_DB)
    manager = StackManager(settings)
    if start_stack:
        manager.up(quiet=True)
    kafka_adapter.ensure_topics(settings)
    result: dict[str, Any] = {
        "spec": asdict(spec),
        "started_at": time.time(),
        "redis": [measure_publish(settings, spec.scans, rate) for rate in spec.rates],
        "dlq_entry_bytes": measure_dlq(settings, spec.dead_letters),
        "table": measure_table(settings, spec.table_rows),
        "kafka": measure_kafka(settings, spec, manager.component("kafka").data_dir),  # type: ignore[attr-defined]
        "settings": {k: v for k, v in flat(settings).items() if k in SIZING_SETTINGS},
    }
    result["markdown"] = render(result)
    return result


def steady_redis_bytes(r: dict[str, Any], settings: dict[str, Any]) -> float:
    """Redis memory in steady state at the measured rate: markers for the dedup window plus the streams'
    retained entries (the DLQ and entries pending during an outage come on top)."""
    markers = r["rate"] * (settings["dedup_window_s"] + 60) * r["marker_bytes"]
    streams = r["rate"] * settings["stream_retention_s"] * r["stream_entry_bytes"]
    return float(markers + streams)


def render(result: dict[str, Any]) -> str:
    runs, k, s = result["redis"], result["kafka"], result["settings"]
    spec = result["spec"]
    lines = [
        SECTION[0],
        "## Bytes per scan, measured",
        "",
        f"`barcode-pipeline bench footprint`, started "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(result['started_at']))}, on the local stack "
        "(Redis 7.0, Kafka 4.1) on this 2-core machine. Per rate, "
        f"{spec['scans']:,} scans through the processor's publish path, their scan times spread as that "
        "rate spreads them (a marker hash holds one minute's scans of its bucket), then read, "
        "acknowledged and trimmed as the workers do; each figure is a Redis `used_memory` or AOF-size "
        "delta divided by the scans.",
        "",
        "| scans/s | marker (streams trimmed) | markers per hash, encoding | stream entry (until trimmed) "
        "| AOF, whole path | Redis in steady state |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['rate']:,.0f} | {r['marker_bytes']:.1f} B | {r['markers_per_hash']:.0f}, "
            f"{', '.join(r['marker_encodings'])} | {r['stream_entry_bytes']:.0f} B | {r['aof_bytes']:.0f} B "
            f"| {steady_redis_bytes(r, s) / 2**30:.2f} GiB |"
            for r in runs
        ),
        "",
        f"Steady state: markers for `dedup_window_s` ({s['dedup_window_s']:,} s) plus one minute, and the "
        f"stream entries of `stream_retention_s` ({s['stream_retention_s']:.0f} s); the DLQ and entries "
        "pending during an outage come on top. The AOF figure is what the log grows by between "
        "rewrites; a rewrite keeps only the live data.",
        "",
        "| other structure | bytes | note |",
        "|---|---|---|",
        f"| DLQ entry | {result['dlq_entry_bytes']:.0f} B | {spec['dead_letters']:,} entries; bound "
        f"`dlq_max_entries` {s['dlq_max_entries']:,} |",
        f"| Kafka record, single scans (one request each) | {k['single']['bytes']:.0f} B | "
        f"{k['single']['records']:,} records; per replica, on disk |",
        f"| Kafka record, batch API (100 per request) | {k['batched']['bytes']:.0f} B | "
        f"{k['batched']['records']:,} records; per replica, on disk |",
        "",
        *_table_lines(result["table"]),
        SECTION[1],
    ]
    return "\n".join(lines) + "\n"


def _table_lines(t: dict[str, Any]) -> list[str]:
    def row(stage: dict[str, Any]) -> str:
        parts = ", ".join(f"{name} {size:.0f} B" for name, size in sorted(stage["per_index"].items()))
        label = TABLE_MIGRATIONS_SAY.get(stage["migration"], "before migration 0004 (unpartitioned)")
        took = "" if stage["migration"] is None else f"{stage['seconds']:.1f} s"
        total = stage["data"] + stage["indexes"]
        return f"| {label} | {total:.0f} B | {stage['data']:.0f} B | {parts} | {took} |"

    copy = next(s for s in t["stages"] if s["migration"] == TABLE_MIGRATIONS[0])
    per_million = copy["seconds"] * 1_000_000 / t["rows"]
    return [
        f"`barcodes`, {t['rows']:,} rows written with the workers' INSERT builder (scan times over three "
        "days), InnoDB's own page counts after `ANALYZE TABLE`, after each migration in turn:",
        "",
        "| table | per row, data + indexes | data (primary key) | secondary indexes"
        " | migration on the filled table |",
        "|---|---|---|---|---|",
        *(row(stage) for stage in t["stages"]),
        "",
        f"Migration {TABLE_MIGRATIONS[0]} copies the table: **{per_million:.0f} s per million rows** on this "
        "machine. The later ones change indexes in place.",
    ]


def write_section(doc: Path, section: str) -> Path:
    """Replace (or append) the footprint section of ``doc``."""
    return sections.write(doc, section, SECTION, "# Capacity")
