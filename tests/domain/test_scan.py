"""The stream entry codec: one JSON field today, one field per name in entries written earlier."""

from __future__ import annotations

import orjson
import pytest

from barcode_pipeline.domain import SCAN_FIELD, StoredScan, named_fields

SCAN = StoredScan("DLV-DEV-1-261125-01J", "sid-1", "880", "DEV-1", 1_795_000_000_000, 1_795_000_000_100, 7)
OLD = {"id": SCAN.internal_barcode_id, "sid": "sid-1", "bc": "880", "dev": "DEV-1",
       "st": "1795000000000", "pt": "1795000000100", "it": "7"}  # fmt: skip


def test_an_entry_is_one_field_that_round_trips() -> None:
    fields = SCAN.to_fields()
    assert list(fields) == [SCAN_FIELD]
    assert StoredScan.from_entry(fields[SCAN_FIELD]) == SCAN
    assert StoredScan.from_fields({SCAN_FIELD: fields[SCAN_FIELD].decode()}) == SCAN


def test_entries_written_one_field_per_name_still_decode() -> None:
    assert StoredScan.from_fields(OLD) == SCAN


def test_named_fields_reads_both_formats_as_text() -> None:
    assert named_fields({SCAN_FIELD: SCAN.to_entry().decode()}) == OLD
    assert named_fields(OLD) == OLD
    broken = {SCAN_FIELD: "not json", "x": "1"}
    assert named_fields(broken) == broken  # shown as it is, never an error


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"[]", "not a JSON object"),
        (orjson.dumps({**orjson.loads(SCAN.to_entry()), "bc": 880}), "bc is not a string"),
        (orjson.dumps(OLD), "st is not an integer"),  # the old format's text times
        (b"{}", "'id'"),
    ],
)
def test_malformed_values_raise_value_or_key_errors(value: bytes, message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        StoredScan.from_entry(value)
