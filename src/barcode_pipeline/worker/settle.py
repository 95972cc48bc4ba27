"""Settling a batch: who acks, and what goes to the DLQ.

An entry leaves a worker's hands in exactly one of two ways: stored (or a duplicate of a stored
row) and acknowledged, or dead-lettered with its cause and acknowledged in the same transaction.
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
    dlq_max_entries: int,
) -> list[Rejected]:
    """Acknowledge what is stored; dead-letter and acknowledge the rest in one MULTI/EXEC.

    Returns the dead letters not written, which stay pending (unacknowledged) and come back later:
    the DLQ is at ``dlq_max_entries`` (back-pressure, never a silent drop), or Redis is full. Stored
    entries are acknowledged with plain XACKs, outside any transaction: a full Redis refuses every
    command queued in a MULTI, but not an XACK, which frees memory. Without that, entries already
    in the database were redelivered until they were dead-lettered as ``max_deliveries``.
    """
    deferred: list[Rejected] = []
    if dead and int(client.xlen(names.DLQ_STREAM)) + len(dead) > dlq_max_entries:
        deferred, dead = list(dead), []
    if dead:
        tx = client.pipeline(transaction=True)
        now_ms = int(time.time() * 1000)
        for letter in dead:
            tx.xadd(names.DLQ_STREAM, letter.record(consumer, now_ms).to_fields())  # type: ignore[arg-type]
        _xack(tx, group, [letter.entry for letter in dead])
        try:
            tx.execute()
        except redis.OutOfMemoryError:
            deferred = list(dead)
    if done:
        pipe = client.pipeline(transaction=False)
        _xack(pipe, group, done)
        pipe.execute()
    return deferred


def _xack(pipe: redis.client.Pipeline, group: str, entries: Sequence[Entry]) -> None:
    """One XACK per stream, carrying all its ids."""
    by_stream: dict[str, list[str]] = {}
    for entry in entries:
        by_stream.setdefault(entry.stream, []).append(entry.entry_id)
    for stream, ids in by_stream.items():
        pipe.xack(stream, group, *ids)
