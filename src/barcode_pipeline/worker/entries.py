"""Stream entries as the worker sees them, and the pure check that turns one into a storable scan.

The worker reads in binary mode: an entry that is not valid UTF-8 must become one dead letter, not a
decoding error that fails every read (and every claim) of the whole batch around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from barcode_pipeline.domain import SCAN_FIELD, StoredScan
from barcode_pipeline.domain.dead_letter import Cause

_SCAN_KEY = SCAN_FIELD.encode()

# Column widths of ``barcodes`` (db/migrations/0001): a longer value would fail the whole INSERT.
MAX_LENGTHS = {"internal_barcode_id": 128, "scan_id": 64, "barcode": 64, "device_id": 64}
# DATETIME(3) ends at 9999-12-31 23:59:59.999 UTC.
MAX_EPOCH_MS = 253_402_300_799_999


@dataclass(slots=True)
class Entry:
    """One stream entry in this worker's hands (it is in the group's PEL until acked)."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes] | None  # None: deleted from the stream since it was delivered
    deliveries: int = 1  # times delivered, this delivery included


def text(value: Any) -> str:
    """Stream names, ids and consumer names arrive as bytes from a binary-mode client."""
    return value.decode() if isinstance(value, bytes) else str(value)


def from_reply(reply: Any, deliveries: Mapping[str, int] | None = None) -> list[Entry]:
    """Flatten an XREADGROUP reply ``[[stream, [(id, fields), ...]], ...]`` into entries."""
    out: list[Entry] = []
    for stream_raw, items in reply or ():
        stream = text(stream_raw)
        out.extend(from_items(stream, items, deliveries))
    return out


def from_items(stream: str, items: Iterable[Any], deliveries: Mapping[str, int] | None = None) -> list[Entry]:
    """Entries from ``[(id, fields), ...]`` as XREADGROUP and XCLAIM return them."""
    out: list[Entry] = []
    for raw_id, fields in items:
        entry_id = text(raw_id)
        count = deliveries.get(entry_id, 1) if deliveries is not None else 1
        out.append(Entry(stream, entry_id, dict(fields) if fields else None, count))
    return out


@dataclass(frozen=True, slots=True)
class Unstorable:
    """Why an entry can never be stored (it goes to the DLQ): the cause, and the text for operators."""

    cause: Cause
    reason: str


def _malformed(reason: str) -> Unstorable:
    return Unstorable(Cause.MALFORMED, f"malformed entry: {reason}")


def decode(entry: Entry) -> StoredScan | Unstorable:
    """The scan an entry carries, or why it can never be stored."""
    if not entry.fields:
        return _malformed("no fields")
    try:
        encoded = entry.fields.get(_SCAN_KEY)
        if encoded is not None:
            scan = StoredScan.from_entry(encoded)
        else:  # written one field per name, by a processor from before the JSON field
            fields = {k.decode("utf-8"): v.decode("utf-8") for k, v in entry.fields.items()}
            scan = StoredScan.from_fields(fields)
    except KeyError as exc:
        return _malformed(f"missing field {exc.args[0]!r}")
    except (ValueError, UnicodeDecodeError) as exc:
        return _malformed(str(exc))
    for name, limit in MAX_LENGTHS.items():
        value: str = getattr(scan, name)
        if not 0 < len(value) <= limit:
            return Unstorable(
                Cause.INVALID, f"invalid entry: {name} must be 1-{limit} characters, got {len(value)}"
            )
    for name in ("scan_time", "processed_time"):
        ms: int = getattr(scan, name)
        if not 0 < ms <= MAX_EPOCH_MS:
            return Unstorable(Cause.INVALID, f"invalid entry: {name} {ms} is outside the storable range")
    return scan
