"""Validation of scanner input. Pure functions: no I/O, so ingest, legacy and the processor share them.

Hand-written rather than a pydantic model on the hot path: a single scan is validated in a few
microseconds and the error names the exact field (and batch index) the API must report.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from barcode_pipeline.domain.ids import derive_scan_id
from barcode_pipeline.domain.scan import ScanEvent
from barcode_pipeline.errors import ValidationFailed

# The rules as patterns; the API's OpenAPI models are built from these same strings.
BARCODE_PATTERN = r"[\x21-\x7e]{1,64}"  # printable ASCII, no whitespace
DEVICE_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
SCAN_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
_BARCODE = re.compile(BARCODE_PATTERN)
_DEVICE = re.compile(DEVICE_ID_PATTERN)
_SCAN_ID = re.compile(SCAN_ID_PATTERN)
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class ScanRules:
    """Limits that are settings rather than constants."""

    max_age_ms: int = 30 * _DAY_MS
    max_future_ms: int = 1000

    @classmethod
    def from_days(cls, max_age_days: float, max_future_ms: int = 1000) -> ScanRules:
        return cls(max_age_ms=int(max_age_days * _DAY_MS), max_future_ms=max_future_ms)


def _fail(message: str, field: str, index: int | None) -> ValidationFailed:
    return ValidationFailed(message, field=field, index=index)


def parse_scan(
    obj: Any, rules: ScanRules, *, index: int | None = None, now_ms: int | None = None
) -> ScanEvent:
    """Validate one decoded JSON object and return the event, or raise ``ValidationFailed``."""
    if not isinstance(obj, dict):
        raise _fail("a scan must be a JSON object", "body", index)
    barcode = obj.get("barcode")
    if not isinstance(barcode, str) or not _BARCODE.fullmatch(barcode):
        raise _fail("barcode must be 1-64 printable ASCII characters without whitespace", "barcode", index)
    device_id = obj.get("deviceId")
    if not isinstance(device_id, str) or not _DEVICE.fullmatch(device_id):
        raise _fail("deviceId must be 1-64 characters of [A-Za-z0-9._-]", "deviceId", index)
    scan_time = obj.get("scanTime")
    if isinstance(scan_time, bool) or not isinstance(scan_time, int) or scan_time <= 0:
        raise _fail("scanTime must be a positive integer (epoch milliseconds)", "scanTime", index)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if scan_time > now + rules.max_future_ms:
        raise _fail("scanTime is in the future", "scanTime", index)
    if scan_time < now - rules.max_age_ms:
        raise _fail("scanTime is older than the accepted window", "scanTime", index)
    scan_id = obj.get("scanId")
    if scan_id is None:
        scan_id = derive_scan_id(device_id, barcode, scan_time)
    elif not isinstance(scan_id, str) or not _SCAN_ID.fullmatch(scan_id):
        raise _fail("scanId must be at most 64 characters of [A-Za-z0-9._:-]", "scanId", index)
    return ScanEvent(barcode=barcode, device_id=device_id, scan_time=scan_time, scan_id=scan_id)


def parse_scan_batch(
    obj: Any, rules: ScanRules, *, max_items: int, now_ms: int | None = None
) -> list[ScanEvent]:
    """Validate a whole batch; the first broken item raises with its index (nothing is half-accepted)."""
    if not isinstance(obj, list):
        raise _fail("a batch must be a JSON array of scans", "body", None)
    if len(obj) > max_items:  # callers map this to 413 before calling, this is a safety net
        raise _fail(f"a batch holds at most {max_items} scans", "body", None)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [parse_scan(item, rules, index=i, now_ms=now) for i, item in enumerate(obj)]
