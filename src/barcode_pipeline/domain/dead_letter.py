"""The dead-letter record: why a stream entry could not be stored, and its codec to and from stream fields.

A persistence worker writes one of these to ``barcode:dlq`` for every entry it gives up on; the
operators' tools read them back and may replay them. Both sides use this module, so the record's
shape and its causes are written down once. The cause is a field of its own: tools decide on it
(for example, whether a replay can help) and never on the wording of the human-readable reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

FIELD_PREFIX = b"dlq_"
STREAM_FIELD = b"dlq_stream"  # the shard stream the entry came from
ID_FIELD = b"dlq_id"  # its id there
CAUSE_FIELD = b"dlq_cause"
REASON_FIELD = b"dlq_reason"
DELIVERIES_FIELD = b"dlq_deliveries"
CONSUMER_FIELD = b"dlq_consumer"
TIME_FIELD = b"dlq_time"  # epoch ms of the dead-lettering


class Cause(StrEnum):
    """Why an entry was dead-lettered (also the label of the workers' dead-letter metric)."""

    MALFORMED = "malformed"  # cannot be decoded (missing field, not UTF-8, not a number)
    INVALID = "invalid"  # decodes, but a value does not fit its column
    UNKNOWN_DEVICE = "unknown_device"  # the device has no center mapping (yet)
    MAX_DELIVERIES = "max_deliveries"  # delivered too often without being stored
    DB_REJECTED = "db_rejected"  # the database refused the row
    NO_PARTITION = "no_partition"  # the scan's day has no partition of barcodes (yet): replay once it has

    @property
    def permanent(self) -> bool:
        """A replay cannot cure it: the entry itself is wrong, not the world around it."""
        return self in (Cause.MALFORMED, Cause.INVALID)


# Entries written before the cause had a field of its own: the reason text began with these.
_CAUSE_OF_OLD_REASON = (
    ("malformed", Cause.MALFORMED),
    ("invalid", Cause.INVALID),
    ("unknown device", Cause.UNKNOWN_DEVICE),
    ("delivered", Cause.MAX_DELIVERIES),
)


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One ``barcode:dlq`` entry: the original entry byte for byte, plus why and where it came from."""

    stream: str
    entry_id: str
    cause: Cause | None  # None: an old entry whose reason matches no known cause
    reason: str
    deliveries: int | None
    consumer: str
    time_ms: int | None
    original: tuple[tuple[bytes, bytes], ...]  # never re-encoded: it may be why the entry is here

    def to_fields(self) -> dict[bytes, bytes]:
        fields = dict(self.original)
        fields.update(
            {
                STREAM_FIELD: self.stream.encode(),
                ID_FIELD: self.entry_id.encode(),
                CAUSE_FIELD: (self.cause or "").encode(),
                REASON_FIELD: self.reason.encode(),
                DELIVERIES_FIELD: str(self.deliveries or 0).encode(),
                CONSUMER_FIELD: self.consumer.encode(),
                TIME_FIELD: str(self.time_ms or 0).encode(),
            }
        )
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> DeadLetterRecord:
        """Decode a DLQ entry's fields; missing metadata becomes empty, never an error."""

        def meta(name: bytes) -> str:
            return fields.get(name, b"").decode("utf-8", "replace")

        reason = meta(REASON_FIELD)
        deliveries, stamp = meta(DELIVERIES_FIELD), meta(TIME_FIELD)
        return cls(
            stream=meta(STREAM_FIELD),
            entry_id=meta(ID_FIELD),
            cause=parse_cause(meta(CAUSE_FIELD), reason),
            reason=reason,
            deliveries=int(deliveries) if deliveries.isdigit() else None,
            consumer=meta(CONSUMER_FIELD),
            time_ms=int(stamp) if stamp.isdigit() and int(stamp) > 0 else None,
            original=tuple((k, v) for k, v in fields.items() if not k.startswith(FIELD_PREFIX)),
        )


def parse_cause(value: str, reason: str = "") -> Cause | None:
    """The recorded cause; for entries older than the field, the cause their reason text began with."""
    if value:
        try:
            return Cause(value)
        except ValueError:
            return None
    lowered = reason.lower()
    return next((cause for prefix, cause in _CAUSE_OF_OLD_REASON if lowered.startswith(prefix)), None)
