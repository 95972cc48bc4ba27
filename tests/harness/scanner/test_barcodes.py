"""Check digits against published codes, and the generators' validity, uniqueness and mix."""

from __future__ import annotations

import pytest

from barcode_harness.scanner.barcodes import (
    BarcodeFactory,
    ean13,
    gs1_check_digit,
    is_valid_ean13,
    is_valid_gs1,
    itf14,
)
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, counter_scan_ids, device_ids
from barcode_pipeline.domain.validation import ScanRules, parse_scan

# Published examples (Wikipedia EAN-13/UPC/ISBN/ITF-14 articles, GS1 GTIN-14 examples)
KNOWN_VALID = [
    "4006381333931",  # EAN-13
    "5901234123457",  # EAN-13
    "9780306406157",  # ISBN-13 as EAN-13
    "036000291452",  # UPC-A
    "00012345678905",  # GTIN-14 of UPC 012345678905
    "10012345678902",  # GTIN-14, packaging indicator 1
    "15400141288763",  # ITF-14
]


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_known_codes_have_the_right_check_digit(code: str) -> None:
    assert gs1_check_digit(code[:-1]) == int(code[-1])
    assert is_valid_gs1(code)


@pytest.mark.parametrize("code", KNOWN_VALID)
def test_any_single_wrong_check_digit_is_rejected(code: str) -> None:
    for wrong in set("0123456789") - {code[-1]}:
        assert not is_valid_gs1(code[:-1] + wrong)


def test_check_digit_zero_case() -> None:
    # 10 - (sum % 10) would give 10 when the sum is a multiple of 10; the digit must be 0
    assert gs1_check_digit("000000000000") == 0
    assert ean13("000000000000") == "0000000000000"


def test_validity_predicates_check_shape() -> None:
    assert is_valid_ean13("4006381333931")
    assert not is_valid_ean13("10012345678902")  # 14 digits
    assert not is_valid_gs1("40063813339a1")
    assert not is_valid_gs1("4")
    assert not is_valid_gs1("")
    assert not is_valid_gs1("٤٠٠٦٣٨١٣٣٣٩٣١")  # Arabic-Indic digits are str.isdigit() but not barcodes
    with pytest.raises(ValueError):
        gs1_check_digit("12a")


def test_itf14_wraps_an_ean13_with_a_new_check_digit() -> None:
    assert itf14(1, "4006381333931") == "14006381333938"
    with pytest.raises(ValueError):
        itf14(9, "4006381333931")  # 9 is variable measure, not a case of this item
    with pytest.raises(ValueError):
        itf14(1, "4006381333932")  # invalid inner EAN-13


def test_factory_codes_are_valid_unique_and_mixed() -> None:
    factory = BarcodeFactory(seed=7, itf14_ratio=0.3)
    codes = [factory.next() for _ in range(20_000)]
    assert len(set(codes)) == len(codes)
    ean = [c for c in codes if len(c) == 13]
    itf = [c for c in codes if len(c) == 14]
    assert all(is_valid_ean13(c) for c in ean)
    assert all(len(c) == 14 and is_valid_gs1(c) and c[0] in "12345678" for c in itf)
    assert 0.27 < len(itf) / len(codes) < 0.33
    korean = sum(1 for c in ean if c.startswith("880")) / len(ean)
    assert 0.65 < korean < 0.75


def test_factory_streams_never_overlap_and_seeds_reproduce() -> None:
    a = BarcodeFactory(seed=1, stream=0, streams=2, itf14_ratio=0)
    b = BarcodeFactory(seed=1, stream=1, streams=2, itf14_ratio=0)
    first = [a.next() for _ in range(5000)]
    second = [b.next() for _ in range(5000)]
    assert not {c[3:12] for c in first} & {c[3:12] for c in second}
    again = BarcodeFactory(seed=1, stream=0, streams=2, itf14_ratio=0)
    assert [again.next() for _ in range(5000)] == first
    with pytest.raises(ValueError):
        BarcodeFactory(stream=2, streams=2)


def test_scans_pass_the_pipeline_validation_and_resends_repeat_whole_events() -> None:
    factory = ScanFactory(SEEDED_DEVICES, duplicate_ratio=0.2, seed=3, scan_ids=counter_scan_ids("t-"))
    scans = [factory.next() for _ in range(3000)]
    rules = ScanRules()
    for scan in scans:
        assert parse_scan(scan.to_wire(), rules) == scan
    ids = [s.scan_id for s in scans]
    repeated = len(ids) - len(set(ids))
    assert repeated == factory.duplicates
    assert 0.15 < factory.duplicates / len(scans) < 0.25
    first_seen: dict[str, object] = {}
    for scan in scans:
        assert first_seen.setdefault(scan.scan_id, scan) == scan  # a resend is the same event
    # round-robin over the devices
    assert [s.device_id for s in scans[:6]] == list(SEEDED_DEVICES) * 2


def test_ulid_scan_ids_are_valid_and_unique() -> None:
    factory = ScanFactory(("SEOUL-CENTER-PC-001",), seed=1)
    ids = {factory.next().scan_id for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 26 for i in ids)


def test_device_ids_start_with_the_seeded_devices() -> None:
    assert device_ids(3) == SEEDED_DEVICES
    assert device_ids(5)[3:] == ("SEOUL-CENTER-PC-004", "SEOUL-CENTER-PC-005")
    with pytest.raises(ValueError):
        device_ids(0)
