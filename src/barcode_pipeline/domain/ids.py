"""Deterministic identifiers.

A redelivered or resent scan must map to the same scan ID, the same internal ID and
so the same database row; that is what makes every stage safe to retry.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from ulid import ULID

_SEP = b"\x1f"


def derive_scan_id(device_id: str, barcode: str, scan_time: int) -> str:
    """Scan ID for a client that sent none: the same (device, barcode, time) gives the same ID."""
    digest = hashlib.blake2b(
        _SEP.join((device_id.encode(), barcode.encode(), str(scan_time).encode())), digest_size=16
    ).hexdigest()
    return f"auto:{digest}"


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def internal_barcode_id(device_id: str, scan_id: str, scan_time: int, zone: str = "Asia/Seoul") -> str:
    """``DLV-{deviceId}-{yyMMdd}-{ULID}``.

    The ULID's time part is ``scan_time`` and its 80 random bits come from a hash of
    (deviceId, scanId), so the ID is a pure function of the event.
    """
    day = datetime.fromtimestamp(scan_time / 1000, tz=_zone(zone)).strftime("%y%m%d")
    rand = hashlib.blake2b(_SEP.join((device_id.encode(), scan_id.encode())), digest_size=10).digest()
    ulid = ULID.from_bytes(scan_time.to_bytes(6, "big") + rand)
    return f"DLV-{device_id}-{day}-{ulid}"
