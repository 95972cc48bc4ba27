"""Unit tests of entry decoding: what is storable and why the rest is dead-lettered."""

from __future__ import annotations

from barcode_pipeline.domain import StoredScan
from barcode_pipeline.worker.entries import MAX_EPOCH_MS, Entry, decode, from_reply

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


def test_missing_field_is_malformed_and_named() -> None:
    fields = encoded()
    del fields[b"dev"]
    reason = decode(entry(fields))
    assert isinstance(reason, str)
    assert reason.startswith("malformed") and "'dev'" in reason


def test_non_numeric_time_is_malformed() -> None:
    reason = decode(entry(encoded(st="yesterday")))
    assert isinstance(reason, str) and reason.startswith("malformed")


def test_bytes_that_are_not_utf8_are_malformed_not_an_exception() -> None:
    fields = encoded()
    fields[b"bc"] = b"\xff\xfe"
    reason = decode(entry(fields))
    assert isinstance(reason, str) and reason.startswith("malformed")


def test_values_the_columns_cannot_hold_are_invalid() -> None:
    too_long = decode(entry(encoded(bc="9" * 65)))
    assert isinstance(too_long, str) and too_long.startswith("invalid") and "barcode" in too_long
    empty = decode(entry(encoded(dev="")))
    assert isinstance(empty, str) and "device_id" in empty
    late = decode(entry(encoded(st=str(MAX_EPOCH_MS + 1))))
    assert isinstance(late, str) and "scan_time" in late
    negative = decode(entry(encoded(pt="-5")))
    assert isinstance(negative, str) and "processed_time" in negative


def test_an_entry_without_fields_is_malformed() -> None:
    assert decode(entry({})) == "malformed entry: no fields"


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
