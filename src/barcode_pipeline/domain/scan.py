"""The scan event as it travels: HTTP JSON -> Kafka value -> Redis stream entry -> DB row."""

from __future__ import annotations

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

    def to_fields(self) -> dict[str, str]:
        """Redis stream entry fields (short names: they are stored once per entry)."""
        return {
            "id": self.internal_barcode_id,
            "sid": self.scan_id,
            "bc": self.barcode,
            "dev": self.device_id,
            "st": str(self.scan_time),
            "pt": str(self.processed_time),
            "it": str(self.ingest_time),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> StoredScan:
        """Inverse of :meth:`to_fields`; raises KeyError/ValueError on a malformed entry."""
        return cls(
            internal_barcode_id=fields["id"],
            scan_id=fields["sid"],
            barcode=fields["bc"],
            device_id=fields["dev"],
            scan_time=int(fields["st"]),
            processed_time=int(fields["pt"]),
            ingest_time=int(fields.get("it", 0)),  # absent in entries written before it existed
        )
