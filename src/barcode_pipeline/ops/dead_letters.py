"""The operators' view of a dead letter, the same for both stores (``ops.dlq`` and ``ops.dlt``).

Scans fail at two places, so dead letters live in two stores: the persistence workers' DLQ stream
and the processor's DLT topic. Tools list, show and replay both through this one shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from barcode_pipeline.domain.dead_letter import Cause

Source = Literal["dlq", "dlt"]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter from either store, in a shape an operator (or a check) can read."""

    source: Source
    id: str  # DLQ entry id, or "partition:offset" in the DLT
    reason: str
    origin: str  # "stream/entry-id" (DLQ) or "topic/partition/offset" (DLT)
    time_ms: int | None
    device_id: str | None
    scan_id: str | None
    deliveries: int | None = None
    cause: Cause | None = None  # DLQ: the recorded cause (the DLT's reason is all it has)
    target: str = ""  # DLQ: the shard stream a replay re-adds the entry to
    fields: dict[str, str] = field(default_factory=dict)  # DLQ: the original entry; DLT: decoded JSON
    raw: bytes | None = field(default=None, repr=False)  # DLT: the record value as written
    key: bytes | None = field(default=None, repr=False)  # DLT: the record key
    meta: dict[str, str] = field(default_factory=dict)  # DLQ: dlq_* fields; DLT: headers
    # DLQ: the original fields byte for byte (a replay must not re-encode what it cannot decode)
    raw_fields: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "source": self.source,
            "id": self.id,
            "reason": self.reason,
            "origin": self.origin,
            "time_ms": self.time_ms,
            "device_id": self.device_id,
            "scan_id": self.scan_id,
            "deliveries": self.deliveries,
            "cause": self.cause,
            "fields": self.fields,
            "meta": self.meta,
        }
        if self.raw is not None:
            data["value"] = self.raw.decode("utf-8", "replace")
        if self.key is not None:
            data["key"] = self.key.decode("utf-8", "replace")
        return data


@dataclass
class ReplayOutcome:
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, where it went)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (dead-letter id, why not)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "replayed": [{"id": i, "to": t} for i, t in self.replayed],
            "skipped": [{"id": i, "why": w} for i, w in self.skipped],
        }


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def with_reason(letters: Sequence[DeadLetter], reason: str | None) -> list[DeadLetter]:
    """Those whose reason contains ``reason`` (case-insensitive); all of them without one."""
    if not reason:
        return list(letters)
    return [x for x in letters if reason.lower() in x.reason.lower()]
