"""Pydantic models that *describe* the API in OpenAPI.

They never validate a request: the hot path parses with orjson and validates with
``barcode_pipeline.domain`` (the same rules the processor and legacy service use), which is several
times cheaper and names the exact field and batch index in its error. The patterns below are the
domain's own, so the documented rules cannot drift from the enforced ones.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from barcode_pipeline.domain.validation import BARCODE_PATTERN, DEVICE_ID_PATTERN, SCAN_ID_PATTERN

ErrorCode = Literal[
    "malformed_json",
    "validation",
    "too_large",
    "unavailable",
    "not_found",
    "http",
    "internal",
    "unauthorized",
    "forbidden",
    "rate_limited",
]


class ScanIn(BaseModel):
    """A scan as scanners send it (camelCase wire format)."""

    barcode: str = Field(
        pattern=f"^{BARCODE_PATTERN}$",
        description="1-64 printable ASCII characters, no whitespace.",
        examples=["8801234567890"],
    )
    deviceId: str = Field(
        pattern=f"^{DEVICE_ID_PATTERN}$",
        description="1-64 characters of [A-Za-z0-9._-]; also the Kafka key, so one device stays in order.",
        examples=["SEOUL-CENTER-PC-001"],
    )
    scanTime: int = Field(
        gt=0,
        description="Epoch milliseconds; at most 1 s in the future and not older than the accepted window "
        "(30 days by default).",
        # A fixed date would age out of the accepted window; scan_schema() puts the app's build time here.
        examples=[1767225600000],
    )
    scanId: str | None = Field(
        default=None,
        pattern=f"^{SCAN_ID_PATTERN}$",
        description="Optional client ID. When absent it is derived from (deviceId, barcode, scanTime), "
        "so resending the same scan is idempotent.",
    )


class Accepted(BaseModel):
    """Kafka confirmed the write (acks=all)."""

    scanId: str
    status: Literal["accepted"] = "accepted"


class BatchResult(BaseModel):
    """Outcome of a batch: ``failedIndices`` were not confirmed and should be resent."""

    total: int
    succeeded: int
    failedIndices: list[int]


class ErrorBody(BaseModel):
    """Every error response. ``field``/``index`` are set for validation errors (422)."""

    error: ErrorCode
    message: str
    field: str | None = None
    index: int | None = None


class BatchUnavailable(ErrorBody):
    """503 for a batch: nothing was confirmed."""

    total: int
    succeeded: int
    failedIndices: list[int]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    kafka: Literal["up", "down"]
    reason: str | None = None


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body the route reads itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def scan_schema(now_ms: int | None = None) -> dict[str, Any]:
    """The scan's JSON schema; its example scanTime is ``now_ms`` (default: now), so the example the
    docs offer ("Try it out") is accepted whenever the app was built, not only near a fixed date."""
    schema = ScanIn.model_json_schema()
    stamp = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    schema["properties"]["scanTime"]["examples"] = [stamp]
    example = {name: prop["examples"][0] for name, prop in schema["properties"].items() if "examples" in prop}
    schema["examples"] = [example]
    return schema


def batch_schema(max_items: int, now_ms: int | None = None) -> dict[str, Any]:
    """A JSON array of scans; more than ``max_items`` is answered with 413 (documented in the spec)."""
    item = scan_schema(now_ms)
    return {
        "type": "array",
        "items": item,
        "maxItems": max_items,
        "description": f"At most {max_items} scans; a longer batch is refused whole with 413 (too_large).",
        "examples": [[item["examples"][0]]],
    }
