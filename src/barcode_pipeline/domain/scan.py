"""The scan event as it travels: HTTP JSON -> Kafka value -> Redis stream entry -> DB row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ScanEvent:
    """A validated scan. ``scan_id`` is always set (derived when the client sent none)."""

    barcode: str
    device_id: str
    scan_time: int  # epoch ms
    scan_id: str

    def to_wire(self) -> dict[str, Any]:
        """The scanner-compatible JSON shape (camelCase)."""
        return {
            "barcode": self.barcode,
            "deviceId": self.device_id,
            "scanTime": self.scan_time,
            "scanId": self.scan_id,
        }

    def to_kafka_value(self) -> bytes:
        return orjson.dumps(self.to_wire())

    @property
    def kafka_key(self) -> bytes:
        """Key = deviceId, so one device's scans stay in one partition, in order."""
        return self.device_id.encode()


# The one field of a stream entry: the scan as a JSON object with the short names below. One field
# instead of seven pairs: fewer arguments for the processor to pack and Redis to parse, and one
# value for the worker to decode. Entries written before (one field per name) are still read.
SCAN_FIELD = "s"
_TEXT_NAMES = ("id", "sid", "bc", "dev")
_TIME_NAMES = ("st", "pt", "it")


def named_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """An entry's scan as ``{name: text}`` whichever format it was written in (for tools and logs).

    A value that is not a JSON object comes back as the entry's own fields, unchanged.
    """
    value = fields.get(SCAN_FIELD)
    if value is None:
        return dict(fields)
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return dict(fields)
    if not isinstance(obj, dict):
        return dict(fields)
    return {str(k): str(v) for k, v in obj.items()}


@dataclass(frozen=True, slots=True)
class StoredScan:
    """The internal record the processor publishes to a Redis stream and a worker stores."""

    internal_barcode_id: str
    scan_id: str
    barcode: str
    device_id: str
    scan_time: int  # epoch ms
    processed_time: int  # epoch ms, when the processor converted it
    ingest_time: int = 0  # epoch ms, the Kafka record's timestamp (ingest produced it); 0: unknown

    def to_fields(self) -> dict[str, bytes]:
        """The Redis stream entry: one field, :data:`SCAN_FIELD`, holding :meth:`to_entry`."""
        return {SCAN_FIELD: self.to_entry()}

    def to_entry(self) -> bytes:
        """The scan as the JSON value of the entry's one field."""
        return orjson.dumps(
            {
                "id": self.internal_barcode_id,
                "sid": self.scan_id,
                "bc": self.barcode,
                "dev": self.device_id,
                "st": self.scan_time,
                "pt": self.processed_time,
                "it": self.ingest_time,
            }
        )

    @classmethod
    def from_entry(cls, value: bytes | str) -> StoredScan:
        """Inverse of :meth:`to_entry`; raises KeyError/ValueError if malformed."""
        obj = orjson.loads(value)  # also refuses bytes that are not UTF-8
        if not isinstance(obj, dict):
            raise ValueError(f"{SCAN_FIELD!r} is not a JSON object")
        texts = [obj[name] for name in _TEXT_NAMES]
        times = [obj["st"], obj["pt"], obj.get("it", 0)]  # "it" came last; 0: unknown
        for name, v in zip(_TEXT_NAMES, texts, strict=True):
            if type(v) is not str:
                raise ValueError(f"{name} is not a string")
        for name, v in zip(_TIME_NAMES, times, strict=True):
            if type(v) is not int:
                raise ValueError(f"{name} is not an integer")
        return cls(*texts, *times)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> StoredScan:
        """Decode an entry's fields, in either format; raises KeyError/ValueError on a malformed entry."""
        value = fields.get(SCAN_FIELD)
        if value is not None:
            return cls.from_entry(value)
        return cls(  # an entry written one field per name, before the JSON field
            internal_barcode_id=fields["id"],
            scan_id=fields["sid"],
            barcode=fields["bc"],
            device_id=fields["dev"],
            scan_time=int(fields["st"]),
            processed_time=int(fields["pt"]),
            ingest_time=int(fields.get("it", 0)),  # absent in entries written before it existed
        )
