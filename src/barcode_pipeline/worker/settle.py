"""Settling a batch: who acks, and what goes to the DLQ. One MULTI/EXEC per batch.

An entry leaves a worker's hands in exactly one of two ways, both acknowledged in the same
transaction: stored (or a duplicate of a stored row), or dead-lettered with its cause.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from barcode_pipeline import names
from barcode_pipeline.domain.dead_letter import Cause, DeadLetterRecord
from barcode_pipeline.worker.entries import Entry


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry this worker gives up on, and why."""

    entry: Entry
    cause: Cause
    reason: str  # human-readable, stored in the DLQ entry

    def record(self, consumer: str, now_ms: int) -> DeadLetterRecord:
        return DeadLetterRecord(
            stream=self.entry.stream,
            entry_id=self.entry.entry_id,
            cause=self.cause,
            reason=self.reason,
            deliveries=self.entry.deliveries,
            consumer=consumer,
            time_ms=now_ms,
            original=tuple((self.entry.fields or {}).items()),
        )


def settle(
    client: redis.Redis,
    group: str,
    consumer: str,
    *,
    done: Sequence[Entry],
    dead: Sequence[Rejected],
) -> None:
    """Dead-letter and acknowledge in one MULTI/EXEC: an entry is never both lost and acked.

    One XACK per stream carries all its ids; the whole thing is one round trip.
    """
    if not done and not dead:
        return
    pipe = client.pipeline(transaction=True)
    now_ms = int(time.time() * 1000)
    for letter in dead:
        pipe.xadd(names.DLQ_STREAM, letter.record(consumer, now_ms).to_fields())  # type: ignore[arg-type]
    by_stream: dict[str, list[str]] = {}
    for entry in [*done, *(letter.entry for letter in dead)]:
        by_stream.setdefault(entry.stream, []).append(entry.entry_id)
    for stream, ids in by_stream.items():
        pipe.xack(stream, group, *ids)
    pipe.execute()
