"""Deterministic identifiers.

A redelivered or resent scan must map to the same scan ID, the same internal ID and
so the same database row; that is what makes every stage safe to retry.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

_SEP = b"\x1f"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # the ULID alphabet
# Every 10-bit value as its two characters: a ULID is 13 table lookups on one integer. (The
# stdlib's base32 encoder is pure Python on 3.11 and was a tenth of the processor's CPU.)
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_QUARTER_HOUR_MS = 900_000  # every real-world UTC offset is a multiple of 15 minutes


def derive_scan_id(device_id: str, barcode: str, scan_time: int) -> str:
    """Scan ID for a client that sent none: the same (device, barcode, time) gives the same ID."""
    digest = hashlib.blake2b(
        _SEP.join((device_id.encode(), barcode.encode(), str(scan_time).encode())), digest_size=16
    ).hexdigest()
    return f"auto:{digest}"


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=4096)
def _day(quarter_hour: int, zone: str) -> str:
    """``yyMMdd`` of a 15-minute slot in ``zone`` (cached: scans arrive in time order)."""
    return datetime.fromtimestamp(quarter_hour * _QUARTER_HOUR_MS / 1000, tz=_zone(zone)).strftime("%y%m%d")


def encode_ulid(raw: bytes) -> str:
    """The 26-character Crockford base32 text of a 16-byte ULID.

    26 characters are 130 bits: the 128 of the ULID after two zero bits, i.e. 13 pairs of
    characters, each pair 10 bits of the number.
    """
    n, p = int.from_bytes(raw, "big"), _PAIRS
    return "".join((
        p[n >> 120], p[(n >> 110) & 1023], p[(n >> 100) & 1023], p[(n >> 90) & 1023],
        p[(n >> 80) & 1023], p[(n >> 70) & 1023], p[(n >> 60) & 1023], p[(n >> 50) & 1023],
        p[(n >> 40) & 1023], p[(n >> 30) & 1023], p[(n >> 20) & 1023], p[(n >> 10) & 1023],
        p[n & 1023],
    ))  # fmt: skip


def internal_barcode_id(device_id: str, scan_id: str, scan_time: int, zone: str = "Asia/Seoul") -> str:
    """``DLV-{deviceId}-{yyMMdd}-{ULID}``.

    The ULID's time part is ``scan_time`` and its 80 random bits come from a hash of
    (deviceId, scanId), so the ID is a pure function of the event.
    """
    day = _day(scan_time // _QUARTER_HOUR_MS, zone)
    rand = hashlib.blake2b(_SEP.join((device_id.encode(), scan_id.encode())), digest_size=10).digest()
    return f"DLV-{device_id}-{day}-{encode_ulid(scan_time.to_bytes(6, 'big') + rand)}"
