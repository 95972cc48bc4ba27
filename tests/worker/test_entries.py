"""Unit tests of entry decoding: what is storable and why the rest is dead-lettered."""

from __future__ import annotations

from barcode_pipeline.domain import StoredScan
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.worker.entries import MAX_EPOCH_MS, Entry, Unstorable, decode, from_reply

SCAN = StoredScan(
    "DLV-DEV-1-261125-01J", "sid-1", "8801234567890", "DEV-1", 1_795_000_000_000, 1_795_000_000_100
)


def entry(fields: dict[bytes, bytes] | None) -> Entry:
    return Entry("barcode:stream:0", "1-0", fields)


def encoded(**overrides: str) -> dict[bytes, bytes]:
    fields = {**SCAN.to_fields(), **overrides}
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_a_well_formed_entry_decodes_to_its_scan() -> None:
    assert decode(entry(encoded())) == SCAN


def why(fields: dict[bytes, bytes], cause: Cause) -> str:
    """The reason an entry cannot be stored, after checking its cause."""
    outcome = decode(entry(fields))
    assert isinstance(outcome, Unstorable) and outcome.cause is cause
    return outcome.reason


def test_missing_field_is_malformed_and_named() -> None:
    fields = encoded()
    del fields[b"dev"]
    reason = why(fields, Cause.MALFORMED)
    assert reason.startswith("malformed") and "'dev'" in reason


def test_non_numeric_time_is_malformed() -> None:
    assert why(encoded(st="yesterday"), Cause.MALFORMED).startswith("malformed")


def test_bytes_that_are_not_utf8_are_malformed_not_an_exception() -> None:
    fields = encoded()
    fields[b"bc"] = b"\xff\xfe"
    assert why(fields, Cause.MALFORMED).startswith("malformed")


def test_values_the_columns_cannot_hold_are_invalid() -> None:
    too_long = why(encoded(bc="9" * 65), Cause.INVALID)
    assert too_long.startswith("invalid") and "barcode" in too_long
    assert "device_id" in why(encoded(dev=""), Cause.INVALID)
    assert "scan_time" in why(encoded(st=str(MAX_EPOCH_MS + 1)), Cause.INVALID)
    assert "processed_time" in why(encoded(pt="-5"), Cause.INVALID)


def test_an_entry_without_fields_is_malformed() -> None:
    assert why({}, Cause.MALFORMED) == "malformed entry: no fields"


def test_from_reply_flattens_streams_and_marks_deleted_entries() -> None:
    reply = [
        [b"barcode:stream:0", [(b"1-0", {b"a": b"1"}), (b"2-0", None)]],
        [b"barcode:stream:3", [(b"3-0", {b"b": b"2"})]],
    ]
    got = from_reply(reply, {"3-0": 4})
    assert [(e.stream, e.entry_id, e.fields, e.deliveries) for e in got] == [
        ("barcode:stream:0", "1-0", {b"a": b"1"}, 1),
        ("barcode:stream:0", "2-0", None, 1),
        ("barcode:stream:3", "3-0", {b"b": b"2"}, 4),
    ]
    assert from_reply(None) == []
