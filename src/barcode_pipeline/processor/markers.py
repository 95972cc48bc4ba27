"""Compact duplicate markers: a short digest per scan, in small hashes keyed by the scan's minute.

A marker of its own per scan (``SET barcode:seen:e:{deviceId}:{scanId} 1 EX 604800``) cost 165 B of
Redis memory: at 1,000 scans/s and a 7-day TTL that was 97 GiB. Here a scan's marker is a 12-byte
field in a hash named after the minute of its ``scanTime`` and one of ``dedup_buckets`` buckets
picked by the same digest. A resend carries the same ``scanTime`` and ID, so it always meets its own
bucket. Hashes stay small enough for Redis's compact listpack encoding (``hash-max-listpack-entries``,
128 by default: ``dedup_buckets`` of 1,024 per minute keep a hash under 128 fields up to about 2,000
scans/s), where a field costs about 14 B and the key's own overhead is shared by all its fields.
One expiry per hash: the end of its minute plus the dedup window.

The window bounds memory, not correctness: a resend older than the window is published again, and
the database's UNIQUE key absorbs it. A false match would drop a scan, so the digest is 96 bits of
BLAKE2b plus the bucket's bits: two different scans of one minute collide with a probability of about
n² / 2^107 (n scans in the minute), never in practice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import redis

from barcode_pipeline import names
from barcode_pipeline.domain import ScanEvent

FIELD_BYTES = 12
NO_MARKER = b""  # the scan is older than the window: publish it, the UNIQUE key is the guard


@dataclass(frozen=True, slots=True)
class Marker:
    key: str  # the bucket hash
    field: bytes  # NO_MARKER: none
    expire_at: int  # epoch seconds: the bucket's minute end plus the window


@dataclass(frozen=True, slots=True)
class MarkerScheme:
    """How markers are named and how long they live; from the settings, read once at start-up."""

    policy: Literal["event", "barcode"]
    buckets: int
    window_s: int

    def of(self, event: ScanEvent, now_s: float) -> Marker:
        """``event`` policy: one marker per scan event; ``barcode``: per barcode and minute of scanTime
        (the database's UNIQUE key on the barcode stays the global guard)."""
        identity = event.barcode if self.policy == "barcode" else f"{event.device_id}\0{event.scan_id}"
        digest = hashlib.blake2b(identity.encode(), digest_size=16).digest()
        minute = event.scan_time // 60_000
        bucket = int.from_bytes(digest[FIELD_BYTES:], "big") % self.buckets
        expire_at = (minute + 1) * 60 + self.window_s
        field = digest[:FIELD_BYTES] if expire_at > now_s else NO_MARKER
        return Marker(names.dedup_bucket_key(self.policy, minute, bucket), field, expire_at)


def legacy_key(event: ScanEvent, policy: Literal["event", "barcode"]) -> str:
    """The one-key-per-scan marker of earlier releases; checked while they may still live (upgrade)."""
    if policy == "barcode":
        return f"{names.DEDUP_PREFIX}b:{event.barcode}"
    return f"{names.DEDUP_PREFIX}e:{event.device_id}:{event.scan_id}"


def legacy_markers_present(client: redis.Redis, *, calls: int = 20) -> bool:
    """Whether one-key-per-scan markers of an earlier release are still there (``auto`` mode).

    Right after an upgrade they are nearly every key, so the first SCAN call finds one; a few
    stragglers missed near the end of their TTL only let a redelivery reach the UNIQUE key.
    """
    cursor = 0
    for _ in range(calls):
        cursor, found = client.scan(cursor, match=names.LEGACY_MARKER_PATTERN, count=1000)
        if found:
            return True
        if cursor == 0:
            return False
    return False
