"""Pure logic of the processor: shard routing, stored records, poison detection."""

from __future__ import annotations

import orjson

from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.domain.records import Poison, decode
from barcode_pipeline.processor.routing import shard_of, to_stored

EVENT = ScanEvent(
    barcode="8801234567893", device_id="SEOUL-CENTER-PC-001", scan_time=1_795_000_000_000, scan_id="s-1"
)


def test_shard_is_stable_and_in_range() -> None:
    shards = {shard_of(f"DEV-{i}", 4) for i in range(200)}
    assert shards == {0, 1, 2, 3}
    assert shard_of("SEOUL-CENTER-PC-001", 4) == 3  # crc32, pinned: hash() would vary per process


def test_to_stored_is_deterministic() -> None:
    a, b = to_stored(EVENT, "Asia/Seoul", 1), to_stored(EVENT, "Asia/Seoul", 2)
    # Pinned (2026-11-18 in Seoul; see tests/domain/test_ids.py for how such an ID is derived):
    # the processing time must not enter the ID, and neither may anything that varies by process.
    expected = "DLV-SEOUL-CENTER-PC-001-261118-01M7Q5CQG0AP15NGE24627JWQ4"
    assert a.internal_barcode_id == b.internal_barcode_id == expected


def test_decode_accepts_old_events_and_rejects_poison() -> None:
    old = {"barcode": "X1", "deviceId": "D", "scanTime": 1_000, "scanId": "a"}
    assert isinstance(decode(orjson.dumps(old)), ScanEvent)
    assert isinstance(decode(b"\xff\x00not json"), Poison)
    assert isinstance(decode(None), Poison)
    bad = decode(orjson.dumps({"barcode": "has space", "deviceId": "D", "scanTime": 5}))
    assert isinstance(bad, Poison) and "barcode" in bad.reason
