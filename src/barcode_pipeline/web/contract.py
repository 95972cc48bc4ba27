"""The wire contract's answers: every body the services send, and their OpenAPI entries.

Every error is a small JSON object ``{"error": <code>, "message": ..., ...}``, never a stack trace,
so scanners and load generators can branch on ``error``. A 503 always carries ``Retry-After``: the
scan was not confirmed and the client should resend it (resending is idempotent).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from barcode_pipeline.errors import ValidationFailed
from barcode_pipeline.web import schemas

JSON = "application/json"
RETRY_AFTER_S = 1  # how long a client should wait after a 503 before resending (the breaker re-probes faster)

RETRY_AFTER_DOC = {
    "Retry-After": {"description": "Seconds to wait before resending.", "schema": {"type": "integer"}}
}


def client_errors(invalid: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the 4xx answers both services give; ``invalid`` describes their 422."""
    return {
        400: {"model": schemas.ErrorBody, "description": "Malformed JSON."},
        413: {
            "model": schemas.ErrorBody,
            "description": "Body over `max_body_bytes`, or batch over `max_batch_items`.",
        },
        422: {"model": schemas.ErrorBody, "description": invalid},
    }


def too_large_doc(max_body_bytes: int, max_batch_items: int | None = None) -> dict[str, Any]:
    """The 413 entry of one route, with its limits in numbers (a batch route also gives its item cap)."""
    batch = f", or a batch of more than {max_batch_items} scans (refused whole)" if max_batch_items else ""
    return {"model": schemas.ErrorBody, "description": f"Body over {max_body_bytes} bytes{batch}."}


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def error_response(
    status: int, error: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return json_response(status, {"error": error, "message": message, **extra}, headers)


def accepted(scan_id: str) -> Response:
    """202: the scan is safe (Kafka confirmed it, or, on the legacy path, the row is committed)."""
    return Response(orjson.dumps({"scanId": scan_id, "status": "accepted"}), status_code=202, media_type=JSON)


def malformed_json(exc: Exception) -> Response:
    return error_response(400, "malformed_json", f"request body is not valid JSON: {exc}")


def too_large(message: str) -> Response:
    """413, closing the connection: otherwise the server would keep reading and discarding the rest."""
    return error_response(413, "too_large", message, headers={"Connection": "close"})


def batch_too_large(max_items: int, got: int) -> Response:
    return too_large(f"a batch holds at most {max_items} scans, got {got}")


def validation_failed(exc: ValidationFailed) -> Response:
    """422 naming the broken field, and its position when it came from a batch."""
    body: dict[str, Any] = {"error": "validation", "field": exc.field}
    if exc.index is not None:
        body["index"] = exc.index
    body["message"] = str(exc)
    return json_response(422, body)


def unavailable(message: str, **extra: Any) -> Response:
    """503 + Retry-After: the scan was not confirmed and the client should resend it (idempotently)."""
    return error_response(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_S)}, **extra)


def batch_unavailable(message: str, total: int) -> Response:
    """503 for a batch of which nothing was confirmed: every index is to be resent."""
    return unavailable(message, total=total, succeeded=0, failedIndices=list(range(total)))


def batch_result(total: int, failed: list[int], *, none_confirmed: str) -> Response:
    """200 when every scan was confirmed, 207 naming the ``failed`` indices, 503 when none was."""
    succeeded = total - len(failed)
    if total and not succeeded:
        return unavailable(none_confirmed, total=total, succeeded=0, failedIndices=failed)
    return json_response(
        207 if failed else 200, {"total": total, "succeeded": succeeded, "failedIndices": failed}
    )
