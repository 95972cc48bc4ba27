"""The workers' dead letters: inspect and replay ``barcode:dlq`` (a Redis stream).

It holds entries a persistence worker could not store: unknown device, delivered too often,
refused by the database, malformed. Each keeps the original stream fields plus the dead-letter
record's fields (:mod:`barcode_pipeline.domain.dead_letter`). Replaying one re-adds the original
fields to its original shard stream and deletes it from the DLQ, in one Lua call, so two operators
replaying at once cannot add it twice.

Replays are meant for after the cause is fixed. The obvious non-fixes are refused unless
``force``: an entry of a device that still has no center mapping, or one that is malformed for good.
The decision rests on the recorded cause, never on the wording of the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import named_fields
from barcode_pipeline.domain.dead_letter import FIELD_PREFIX, Cause, DeadLetterRecord
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.ops.dead_letters import DeadLetter, ReplayOutcome, text, with_reason

log = logging.getLogger(__name__)


def binary_client(settings: Settings) -> redis.Redis:
    """Binary mode: DLQ entries may hold bytes that are not UTF-8 (that may be why they are here)."""
    return redis_adapter.client(settings, decode=False)


def _dlq_letter(entry_id: bytes | str, raw_fields: dict[bytes, bytes]) -> DeadLetter:
    record = DeadLetterRecord.from_fields(raw_fields)
    original = {text(k): text(v) for k, v in record.original}
    scan = named_fields(original)
    meta = {text(k): text(v) for k, v in raw_fields.items() if k.startswith(FIELD_PREFIX)}
    eid = text(entry_id)
    return DeadLetter(
        source="dlq",
        id=eid,
        reason=record.reason or "(no reason recorded)",
        cause=record.cause,
        origin=f"{record.stream or '?'}/{record.entry_id or '?'}",
        target=record.stream,
        time_ms=record.time_ms if record.time_ms is not None else int(eid.split("-")[0]),
        device_id=scan.get("dev"),
        scan_id=scan.get("sid"),
        deliveries=record.deliveries,
        fields=original,
        meta=meta,
        raw_fields=record.original,
    )


def read_dlq(
    client: redis.Redis,
    *,
    since_ms: int | None = None,
    limit: int | None = None,
    stream: str = names.DLQ_STREAM,
) -> list[DeadLetter]:
    """DLQ entries, oldest first, from ``since_ms`` (entry ids are dead-lettering times)."""
    start = f"{since_ms}-0" if since_ms is not None else "-"
    out: list[DeadLetter] = []
    page = 1000 if limit is None else min(1000, limit)
    while limit is None or len(out) < limit:
        items: Any = client.xrange(stream, min=start, max="+", count=page)
        if not items:
            break
        out.extend(_dlq_letter(eid, fields) for eid, fields in items)
        last = text(items[-1][0])
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
        if len(items) < page:
            break
    return out if limit is None else out[:limit]


def list_dlq(
    settings: Settings, *, since_ms: int | None = None, limit: int | None = 100, reason: str | None = None
) -> list[DeadLetter]:
    """DLQ entries (oldest first), optionally only those whose reason contains ``reason``."""
    client = binary_client(settings)
    try:
        letters = read_dlq(client, since_ms=since_ms, limit=None if reason else limit)
    finally:
        client.close()
    letters = with_reason(letters, reason)
    return letters if limit is None else letters[:limit]


def get_dlq(settings: Settings, entry_id: str) -> DeadLetter | None:
    client = binary_client(settings)
    try:
        items: Any = client.xrange(names.DLQ_STREAM, min=entry_id, max=entry_id, count=1)
    except redis.ResponseError as exc:
        raise ConfigError(f"not a stream entry id: {entry_id!r} ({exc})") from None
    finally:
        client.close()
    return _dlq_letter(items[0][0], items[0][1]) if items else None


def _mapped_devices(settings: Settings, devices: Iterable[str]) -> set[str]:
    wanted = sorted(set(devices))
    if not wanted:
        return set()
    conn = db.connect(settings.db.url, autocommit=True)
    try:
        with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(wanted))
            cur.execute(f"SELECT device_id FROM device_center_mapping WHERE device_id IN ({marks})", wanted)
            return {str(row[0]) for row in cur.fetchall()}
    finally:
        conn.close()


def _dlq_blocker(letter: DeadLetter, known_streams: set[str], mapped: set[str], force: bool) -> str | None:
    """Why this entry must not be replayed now, or None."""
    if letter.target not in known_streams:
        return f"original stream {letter.target!r} is not one of this pipeline's shards"
    if not letter.raw_fields:
        return "the entry kept no original fields"
    if force:
        return None
    if letter.cause is not None and letter.cause.permanent:
        return f"permanently invalid ({letter.reason}); a replay would dead-letter it again (use --force)"
    if letter.cause is Cause.UNKNOWN_DEVICE and letter.device_id not in mapped:
        return f"device {letter.device_id!r} still has no center mapping; add it first (or use --force)"
    return None


def replay_dlq(
    settings: Settings,
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
    force: bool = False,
) -> ReplayOutcome:
    """Move DLQ entries back to their shard streams: ``ids``, those matching ``reason``, or ``everything``."""
    if ids is None and not reason and not everything:
        raise ConfigError("name the entries to replay, select them by reason, or replay all of them")
    outcome = ReplayOutcome(dry_run=dry_run)
    if ids is not None:
        letters: list[DeadLetter] = []
        for entry_id in ids:
            found = get_dlq(settings, entry_id)
            if found is None:
                outcome.skipped.append((entry_id, "not in the DLQ (already replayed?)"))
            else:
                letters.append(found)
        letters = with_reason(letters, reason)
    else:
        letters = list_dlq(settings, limit=None, reason=reason)
    unknown = [x.device_id for x in letters if x.device_id and x.cause is Cause.UNKNOWN_DEVICE]
    mapped = _mapped_devices(settings, unknown)
    streams = set(names.all_streams(settings.streams.shards))
    todo: list[DeadLetter] = []
    for letter in letters:
        why = _dlq_blocker(letter, streams, mapped, force)
        if why:
            outcome.skipped.append((letter.id, why))
        else:
            todo.append(letter)
    if dry_run:
        outcome.replayed = [(x.id, x.target) for x in todo]
        return outcome
    client = binary_client(settings)
    try:
        script = client.register_script(redis_adapter.lua_source("replay_dead_letter"))
        for start in range(0, len(todo), 200):
            chunk = todo[start : start + 200]
            pipe = client.pipeline(transaction=False)
            for letter in chunk:
                args: list[str | bytes] = [letter.id]
                for k, v in letter.raw_fields:
                    args += (k, v)
                script(keys=[names.DLQ_STREAM, letter.target], args=args, client=pipe)
            for letter, new_id in zip(chunk, pipe.execute(), strict=True):
                if new_id:
                    outcome.replayed.append((letter.id, f"{letter.target}/{text(new_id)}"))
                else:
                    outcome.skipped.append((letter.id, "already gone from the DLQ (replayed concurrently?)"))
    finally:
        client.close()
    log.info("DLQ replay: %d replayed, %d skipped", len(outcome.replayed), len(outcome.skipped))
    return outcome
