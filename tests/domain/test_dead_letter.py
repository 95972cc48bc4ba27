"""The dead-letter record round-trips through stream fields, and its cause never depends on wording."""

from __future__ import annotations

from barcode_pipeline.domain.dead_letter import (
    CAUSE_FIELD,
    REASON_FIELD,
    Cause,
    DeadLetterRecord,
    parse_cause,
)

ORIGINAL = ((b"dev", b"SEOUL-CENTER-PC-001"), (b"bc", b"\xff\xfe not utf-8"))


def record(cause: Cause | None = Cause.UNKNOWN_DEVICE, reason: str = "anything at all") -> DeadLetterRecord:
    return DeadLetterRecord(
        stream="barcode:stream:2",
        entry_id="1795600000100-0",
        cause=cause,
        reason=reason,
        deliveries=3,
        consumer="worker-1",
        time_ms=1_795_600_000_200,
        original=ORIGINAL,
    )


def test_a_record_round_trips_through_stream_fields_keeping_the_original_bytes() -> None:
    letter = record()
    fields = letter.to_fields()
    assert fields[b"bc"] == b"\xff\xfe not utf-8" and fields[CAUSE_FIELD] == b"unknown_device"
    assert DeadLetterRecord.from_fields(fields) == letter


def test_the_cause_is_read_from_its_field_not_from_the_reason() -> None:
    fields = record(Cause.DB_REJECTED, reason="malformed-looking words").to_fields()
    assert DeadLetterRecord.from_fields(fields).cause is Cause.DB_REJECTED


def test_entries_older_than_the_cause_field_get_it_from_their_reason() -> None:
    fields = record().to_fields()
    del fields[CAUSE_FIELD]
    fields[REASON_FIELD] = b"unknown device: deviceId 'X' has no center mapping"
    assert DeadLetterRecord.from_fields(fields).cause is Cause.UNKNOWN_DEVICE
    assert parse_cause("", "malformed entry: no fields") is Cause.MALFORMED
    assert parse_cause("", "delivered 6 times (limit 5)") is Cause.MAX_DELIVERIES
    assert parse_cause("", "something new") is None
    assert parse_cause("no-such-cause") is None


def test_only_malformed_and_invalid_entries_are_permanent() -> None:
    assert {c for c in Cause if c.permanent} == {Cause.MALFORMED, Cause.INVALID}


def test_missing_metadata_decodes_to_empty_values() -> None:
    letter = DeadLetterRecord.from_fields({b"dev": b"D1"})
    assert (letter.stream, letter.cause, letter.deliveries, letter.time_ms) == ("", None, None, None)
    assert letter.original == ((b"dev", b"D1"),)
