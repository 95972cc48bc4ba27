"""Decoding topic records back into scan events; poison records are reported, never raised.

The processor decodes what it consumes, and the DLT tools what they inspect or replay: one decoder,
in the domain, below both.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from barcode_pipeline.domain import ScanEvent, ScanRules, parse_scan
from barcode_pipeline.errors import ValidationFailed

# Events on the topic were validated at ingest; a replay may legitimately process old ones,
# so the processor checks structure only and ignores the time window.
STRUCTURAL_RULES = ScanRules(max_age_ms=2**62, max_future_ms=2**62)


@dataclass(frozen=True, slots=True)
class Poison:
    reason: str


def decode(value: bytes | None) -> ScanEvent | Poison:
    if value is None:
        return Poison("empty record value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Poison(f"undecodable JSON: {exc}"[:200])
    try:
        return parse_scan(obj, STRUCTURAL_RULES)
    except ValidationFailed as exc:
        return Poison(f"invalid {exc.field}: {exc}"[:200])
