"""Checking the promise against the database: every acknowledged scan stored exactly once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from barcode_pipeline.adapters import db

CHUNK = 1000


@dataclass
class Verification:
    acknowledged: int = 0  # distinct scan ids the clients got a 2xx for
    stored: int = 0  # of those, how many have a row
    missing: int = 0  # acknowledged, no row (and not dead-lettered: the caller subtracts those)
    duplicate_rows: int = 0  # rows beyond the first for any scan
    missing_sample: list[str] = field(default_factory=list)
    freshness_ms: list[float] = field(default_factory=list, repr=False)  # saved_time - scan_time

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("freshness_ms")
        return data


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


@dataclass(frozen=True)
class ScanWindow:
    """Where the scans to verify can be: these devices, scanned at or after ``since_ms`` (epoch ms).

    Without it every chunk of IDs is a scan of the whole table (``scan_id`` has no index of its
    own), which on a table of tens of millions of rows takes minutes. With it the rows are read once,
    along the duplicate guard's (device_id, scan_time) prefix and nothing else.
    """

    devices: tuple[str, ...]
    since_ms: int


_COUNTS = "SELECT scan_id, COUNT(*), MIN(TIMESTAMPDIFF(MICROSECOND, scan_time, saved_time)) FROM {table} "


def verify_scan_ids(
    db_url: str, scan_ids: Iterable[str], *, table: str = "barcodes", window: ScanWindow | None = None
) -> Verification:
    """Count rows per acknowledged scan id (duplicates would show up as more than one row)."""
    wanted = sorted(set(scan_ids))
    result = Verification(acknowledged=len(wanted))
    seen: dict[str, int] = {}
    wanted_set = set(wanted)
    conn = db.connect(db_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            for sql, args in _queries(table, wanted, window):
                cur.execute(sql, args)
                for scan_id, count, fresh_us in cur.fetchall():
                    if scan_id not in wanted_set:  # a window holds rows of scans nobody asked about
                        continue
                    seen[scan_id] = seen.get(scan_id, 0) + int(count)
                    if fresh_us is not None:
                        result.freshness_ms.append(float(fresh_us) / 1000.0)
    finally:
        conn.close()
    result.stored = len(seen)
    result.duplicate_rows = sum(c - 1 for c in seen.values())
    missing = [s for s in wanted if s not in seen]
    result.missing = len(missing)
    result.missing_sample = missing[:10]
    return result


def _queries(
    table: str, wanted: Sequence[str], window: ScanWindow | None
) -> Iterable[tuple[str, tuple[object, ...]]]:
    if window is not None:
        since = datetime.fromtimestamp(window.since_ms / 1000, UTC).replace(tzinfo=None)
        for device in window.devices:
            where = "WHERE device_id = %s AND scan_time >= %s GROUP BY scan_id"
            yield _COUNTS.format(table=table) + where, (device, since)
        return
    for chunk in _chunks(wanted):
        marks = ",".join(["%s"] * len(chunk))
        yield _COUNTS.format(table=table) + f"WHERE scan_id IN ({marks}) GROUP BY scan_id", tuple(chunk)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]
