"""Shared domain model: the scan event, its validation rules and the internal barcode ID."""

from barcode_pipeline.domain.ids import derive_scan_id, internal_barcode_id
from barcode_pipeline.domain.scan import SCAN_FIELD, ScanEvent, StoredScan, named_fields
from barcode_pipeline.domain.validation import ScanRules, parse_scan, parse_scan_batch

__all__ = [
    "SCAN_FIELD",
    "ScanEvent",
    "ScanRules",
    "StoredScan",
    "derive_scan_id",
    "internal_barcode_id",
    "named_fields",
    "parse_scan",
    "parse_scan_batch",
]
