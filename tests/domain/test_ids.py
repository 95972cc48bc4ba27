"""Deterministic IDs: same event -> same ID; format and ULID encoding match the standard."""

from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo

from ulid import ULID

from barcode_pipeline.domain.ids import derive_scan_id, encode_ulid, internal_barcode_id


def test_encode_ulid_matches_the_reference_library() -> None:
    for _ in range(2000):
        raw = os.urandom(16)
        assert encode_ulid(raw) == str(ULID.from_bytes(raw))
    assert encode_ulid(b"\xff" * 16) == "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
    assert encode_ulid(b"\x00" * 16) == "0" * 26


def test_internal_id_is_deterministic_and_well_formed() -> None:
    t = 1_795_611_368_634
    a = internal_barcode_id("SEOUL-CENTER-PC-001", "s-1", t)
    assert a == internal_barcode_id("SEOUL-CENTER-PC-001", "s-1", t)
    assert a != internal_barcode_id("SEOUL-CENTER-PC-001", "s-2", t)
    assert a != internal_barcode_id("SEOUL-CENTER-PC-002", "s-1", t)
    prefix, dev, day, ulid = a[:3], a[4:23], a[24:30], a[31:]
    assert (prefix, dev) == ("DLV", "SEOUL-CENTER-PC-001")
    assert day == datetime.fromtimestamp(t / 1000, ZoneInfo("Asia/Seoul")).strftime("%y%m%d")
    assert len(ulid) == 26 and ULID.from_str(ulid).milliseconds == t


def test_date_uses_the_configured_zone_at_midnight_edges() -> None:
    # 2026-11-24 15:30 UTC is 2026-11-25 00:30 in Seoul
    t = int(datetime(2026, 11, 24, 15, 30, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    assert "-261125-" in internal_barcode_id("D", "s", t, "Asia/Seoul")
    assert "-261124-" in internal_barcode_id("D", "s", t, "UTC")
    kolkata = datetime.fromtimestamp((t + 30 * 60_000) / 1000, ZoneInfo("Asia/Kolkata")).strftime("%y%m%d")
    assert f"-{kolkata}-" in internal_barcode_id("D", "s", t + 30 * 60_000, "Asia/Kolkata")


def test_derived_scan_id_is_stable_and_valid() -> None:
    a = derive_scan_id("DEV", "880123", 1)
    assert a == derive_scan_id("DEV", "880123", 1) != derive_scan_id("DEV", "880123", 2)
    assert len(a) <= 64 and a.startswith("auto:")
