"""Pure logic of the compact duplicate markers (processor/markers.py)."""

from __future__ import annotations

from dataclasses import replace

from barcode_pipeline import names
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.processor.markers import FIELD_BYTES, NO_MARKER, MarkerScheme, legacy_key

SCAN_MS = 1_795_000_123_456  # 2026-11-18
NOW_S = SCAN_MS / 1000 + 30
EVENT = ScanEvent(barcode="8801234567893", device_id="SEOUL-CENTER-PC-001", scan_time=SCAN_MS, scan_id="s-1")
SCHEME = MarkerScheme("event", buckets=1024, window_s=3600)


def test_a_resend_meets_its_own_marker() -> None:
    again = ScanEvent(**{f: getattr(EVENT, f) for f in ("barcode", "device_id", "scan_time", "scan_id")})
    assert SCHEME.of(EVENT, NOW_S) == SCHEME.of(again, NOW_S + 600)


def test_marker_is_a_short_field_in_the_bucket_of_the_scans_minute() -> None:
    marker = SCHEME.of(EVENT, NOW_S)
    minute = SCAN_MS // 60_000
    assert marker.key.startswith(f"{names.DEDUP_PREFIX}he:{minute}:")
    assert 0 <= int(marker.key.rsplit(":", 1)[1]) < 1024
    assert len(marker.field) == FIELD_BYTES
    assert marker.expire_at == (minute + 1) * 60 + 3600


def test_other_scans_get_other_markers() -> None:
    others = [replace(EVENT, scan_id=f"s-{i}") for i in range(2, 2000)]
    markers = {SCHEME.of(e, NOW_S) for e in others}
    assert len({m.field for m in markers}) == len(others)
    assert len({m.key for m in markers}) > 700  # spread over the buckets, not piled into a few


def test_a_scan_older_than_the_window_gets_no_marker() -> None:
    minute_end_s = (SCAN_MS // 60_000 + 1) * 60
    assert SCHEME.of(EVENT, minute_end_s + 3599).field != NO_MARKER
    assert SCHEME.of(EVENT, minute_end_s + 3600).field == NO_MARKER


def test_barcode_policy_keys_by_barcode() -> None:
    scheme = MarkerScheme("barcode", buckets=1024, window_s=3600)
    other_device = replace(EVENT, device_id="BUSAN-PC-9", scan_id="x")
    assert scheme.of(EVENT, NOW_S) == scheme.of(other_device, NOW_S)
    assert scheme.of(EVENT, NOW_S).key.startswith(f"{names.DEDUP_PREFIX}hb:")
    assert SCHEME.of(EVENT, NOW_S) != SCHEME.of(other_device, NOW_S)


def test_new_keys_never_collide_with_legacy_markers() -> None:
    digits = ScanEvent(barcode="1", device_id="29916668", scan_time=SCAN_MS, scan_id="7")
    assert legacy_key(digits, "event") == f"{names.DEDUP_PREFIX}e:29916668:7"
    assert not SCHEME.of(digits, NOW_S).key.startswith(f"{names.DEDUP_PREFIX}e:")
    assert legacy_key(EVENT, "barcode") == f"{names.DEDUP_PREFIX}b:8801234567893"
