"""Pure mapping from an event to its shard and internal record (markers: processor/markers.py)."""

from __future__ import annotations

import zlib

from barcode_pipeline.domain import ScanEvent, StoredScan, internal_barcode_id


def shard_of(device_id: str, shards: int) -> int:
    """Stable across processes and restarts (unlike ``hash()``): one device always maps to one shard."""
    return zlib.crc32(device_id.encode()) % shards


def to_stored(event: ScanEvent, zone: str, processed_time: int, ingest_time: int = 0) -> StoredScan:
    return StoredScan(
        internal_barcode_id=internal_barcode_id(event.device_id, event.scan_id, event.scan_time, zone),
        scan_id=event.scan_id,
        barcode=event.barcode,
        device_id=event.device_id,
        scan_time=event.scan_time,
        processed_time=processed_time,
        ingest_time=ingest_time,
    )
