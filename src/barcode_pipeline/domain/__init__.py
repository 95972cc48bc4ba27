"""Shared domain model: the scan event, its validation rules and the internal barcode ID."""

from barcode_pipeline.domain.ids import derive_scan_id, internal_barcode_id
from barcode_pipeline.domain.scan import ScanEvent, StoredScan
from barcode_pipeline.domain.validation import ScanRules, parse_scan, parse_scan_batch

__all__ = [
    "ScanEvent",
    "ScanRules",
    "StoredScan",
    "derive_scan_id",
    "internal_barcode_id",
    "parse_scan",
    "parse_scan_batch",
]
