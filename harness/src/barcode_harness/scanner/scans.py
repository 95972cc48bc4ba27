"""Scan events as a center PC produces them: one device, a barcode, the scan time and a client scan ID.

Shared by the scanner simulator and the load generator so that both send the same, valid shape.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence

import orjson
from ulid import ULID

from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_pipeline.domain.scan import ScanEvent

# The devices seeded in ``device_center_mapping`` (CENTER-1..3); others are unmapped and end in the DLQ.
SEEDED_DEVICES: tuple[str, ...] = ("SEOUL-CENTER-PC-001", "SEOUL-CENTER-PC-002", "SEOUL-CENTER-PC-003")
_RECENT_PER_DEVICE = 1000  # how far back a simulated resend can reach


def device_ids(count: int) -> tuple[str, ...]:
    """``count`` device IDs in the seeded naming scheme; the first three are the seeded ones."""
    if count < 1:
        raise ValueError("at least one device")
    return tuple(f"SEOUL-CENTER-PC-{i:03d}" for i in range(1, count + 1))


def counter_scan_ids(prefix: str) -> Callable[[], str]:
    """Cheaper unique IDs for load tests: the caller's run token, then a counter."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class ScanFactory:
    """Makes scans for a set of devices; with ``duplicate_ratio`` some are resends of an earlier scan.

    A resend repeats the whole event (same scanId, barcode and scanTime) as a scanner that lost an
    acknowledgement would, so the pipeline's dedup is exercised with realistic duplicates.
    """

    def __init__(
        self,
        devices: Sequence[str],
        *,
        barcodes: BarcodeFactory | None = None,
        scan_ids: Callable[[], str] | None = None,
        duplicate_ratio: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not devices:
            raise ValueError("at least one device")
        if not 0.0 <= duplicate_ratio < 1.0:
            raise ValueError("duplicate_ratio must be in [0, 1)")
        self.devices = tuple(devices)
        self.duplicate_ratio = duplicate_ratio
        self._rng = random.Random(seed)
        self._barcodes = barcodes or BarcodeFactory(seed=self._rng.randrange(1 << 30))
        # by default what a real center PC would use: time-ordered IDs, unique across restarts
        self._scan_ids = scan_ids or (lambda: str(ULID()))
        self._recent: dict[str, deque[ScanEvent]] = defaultdict(lambda: deque(maxlen=_RECENT_PER_DEVICE))
        self._turn = 0
        self.duplicates = 0

    def next(self, device_id: str | None = None) -> ScanEvent:
        """The next scan of ``device_id`` (round-robin over the devices when omitted)."""
        if device_id is None:
            device_id = self.devices[self._turn]
            self._turn = (self._turn + 1) % len(self.devices)
        recent = self._recent[device_id]
        if self.duplicate_ratio and recent and self._rng.random() < self.duplicate_ratio:
            self.duplicates += 1
            return recent[self._rng.randrange(len(recent))]
        scan = ScanEvent(
            barcode=self._barcodes.next(),
            device_id=device_id,
            scan_time=time.time_ns() // 1_000_000,
            scan_id=self._scan_ids(),
        )
        recent.append(scan)
        return scan


def encode_scan(scan: ScanEvent) -> bytes:
    """The wire body of one scan (``POST /ingest/barcode``)."""
    return orjson.dumps(scan.to_wire())


def encode_batch(scans: Sequence[ScanEvent]) -> bytes:
    """The wire body of a batch (``POST /ingest/barcodes``): a JSON array of scans."""
    return orjson.dumps([s.to_wire() for s in scans])
