"""Unit tests of entry decoding: what is storable and why the rest is dead-lettered."""

from __future__ import annotations

import dataclasses

import orjson

from barcode_pipeline.domain import SCAN_FIELD, StoredScan
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.worker.entries import MAX_EPOCH_MS, Entry, Unstorable, decode, from_reply

SCAN = StoredScan(
    "DLV-DEV-1-261125-01J", "sid-1", "8801234567890", "DEV-1", 1_795_000_000_000, 1_795_000_000_100
)


def entry(fields: dict[bytes, bytes] | None) -> Entry:
    return Entry("barcode:stream:0", "1-0", fields)


def encoded(**overrides: object) -> dict[bytes, bytes]:
    """An entry as the processor writes it: one field holding the scan as JSON."""
    obj = {**orjson.loads(SCAN.to_entry()), **overrides}
    return {SCAN_FIELD.encode(): orjson.dumps({k: v for k, v in obj.items() if v is not DROP})}


def legacy(**overrides: str) -> dict[bytes, bytes]:
    """An entry as processors wrote it before the JSON field: one field per name, all text."""
    obj = {k: str(v) for k, v in orjson.loads(SCAN.to_entry()).items()}
    return {k.encode(): v.encode() for k, v in {**obj, **overrides}.items()}


DROP = object()  # leave the name out


def test_a_well_formed_entry_decodes_to_its_scan_in_either_format() -> None:
    assert decode(entry(encoded())) == SCAN
    assert decode(entry(legacy())) == SCAN
    assert decode(entry(legacy(it="1795000000050"))) == dataclasses.replace(
        SCAN, ingest_time=1_795_000_000_050
    )


def why(fields: dict[bytes, bytes], cause: Cause) -> str:
    """The reason an entry cannot be stored, after checking its cause."""
    outcome = decode(entry(fields))
    assert isinstance(outcome, Unstorable) and outcome.cause is cause
    return outcome.reason


def test_missing_field_is_malformed_and_named() -> None:
    for reason in (why(encoded(dev=DROP), Cause.MALFORMED), why(without(legacy(), b"dev"), Cause.MALFORMED)):
        assert reason.startswith("malformed") and "'dev'" in reason


def without(fields: dict[bytes, bytes], name: bytes) -> dict[bytes, bytes]:
    return {k: v for k, v in fields.items() if k != name}


def test_a_value_of_the_wrong_type_is_malformed() -> None:
    assert "st" in why(encoded(st="yesterday"), Cause.MALFORMED)
    assert "pt" in why(encoded(pt=True), Cause.MALFORMED)  # JSON true is not an epoch
    assert "bc" in why(encoded(bc=880), Cause.MALFORMED)
    assert why(legacy(st="yesterday"), Cause.MALFORMED).startswith("malformed")


def test_a_value_that_is_not_a_json_object_is_malformed() -> None:
    for value in (b"not json", b"[1, 2]", b'"text"', b""):
        assert why({SCAN_FIELD.encode(): value}, Cause.MALFORMED).startswith("malformed")


def test_bytes_that_are_not_utf8_are_malformed_not_an_exception() -> None:
    broken = encoded()[SCAN_FIELD.encode()].replace(b"8801234567890", b"\xff\xfe")
    assert why({SCAN_FIELD.encode(): broken}, Cause.MALFORMED).startswith("malformed")
    fields = legacy()
    fields[b"bc"] = b"\xff\xfe"
    assert why(fields, Cause.MALFORMED).startswith("malformed")


def test_values_the_columns_cannot_hold_are_invalid() -> None:
    too_long = why(encoded(bc="9" * 65), Cause.INVALID)
    assert too_long.startswith("invalid") and "barcode" in too_long
    assert "device_id" in why(encoded(dev=""), Cause.INVALID)
    assert "scan_time" in why(encoded(st=MAX_EPOCH_MS + 1), Cause.INVALID)
    assert "processed_time" in why(encoded(pt=-5), Cause.INVALID)
    assert "processed_time" in why(legacy(pt="-5"), Cause.INVALID)


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
