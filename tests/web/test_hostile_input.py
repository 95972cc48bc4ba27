"""Hostile input against both services' own OpenAPI specs (schemathesis), on real servers and stores.

Bounded: a fixed number of generated cases per operation. What must hold for every one of them:
no 5xx, every 4xx is the JSON error body, and the spec's own examples are accepted whenever the app
was built (the example scanTime is the build time, not a fixed date that ages out of the window).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    status_code_conformance,
)

from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanRules, parse_scan
from barcode_pipeline.ingest.app import create_app as create_ingest
from barcode_pipeline.legacy.app import create_app as create_legacy
from barcode_pipeline.web.schemas import ErrorBody
from tests.legacy.conftest import Db, ThreadServer

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance]
ERROR_FIELDS = set(ErrorBody.model_fields)

# The specs as the apps build them (no I/O): what a client of either service is handed.
ingest_schema = schemathesis.openapi.from_dict(create_ingest(Settings()).openapi())
legacy_schema = schemathesis.openapi.from_dict(create_legacy(Settings()).openapi())
for _schema in (ingest_schema, legacy_schema):
    # Valid and invalid bodies (wrong types, patterns broken, limits crossed), and bytes like \x00.
    _schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE], allow_x00=True
    )
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure reproduces
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def assert_error_body(response: httpx.Response | Any) -> None:
    """A 4xx is ``{"error": <code>, "message": ..., ...}`` and nothing else (no stack trace, no HTML)."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers["content-type"]
    if isinstance(content_type, list):  # schemathesis keeps every value of a header
        content_type = content_type[0]
    assert content_type.startswith("application/json"), (response.status_code, response.content)
    body = orjson.loads(response.content)
    assert (
        isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
    )
    assert set(body) <= ERROR_FIELDS | {"total", "succeeded", "failedIndices"}, body


@pytest.fixture(scope="module")
def ingest_url(stack_settings: Settings, ingest_key: str) -> Iterator[str]:
    server = ThreadServer(create_ingest(stack_settings))
    server.start()
    yield server.base_url
    server.stop()


@pytest.fixture(scope="module")
def legacy_url(stack_settings: Settings, legacy_db: Db) -> Iterator[str]:
    server = ThreadServer(create_legacy(stack_settings.updated({"db_url": legacy_db.url})))
    server.start()
    yield server.base_url
    server.stop()


@ingest_schema.parametrize()
@FUZZ
def test_ingest_survives_its_own_spec(case: schemathesis.Case[Any], ingest_url: str, ingest_key: str) -> None:
    response = case.call(base_url=ingest_url, headers=client_headers(ingest_key))
    case.validate_response(response, checks=CHECKS)
    assert_error_body(response)


@legacy_schema.parametrize()
@FUZZ
def test_legacy_survives_its_own_spec(case: schemathesis.Case[Any], legacy_url: str) -> None:
    response = case.call(base_url=legacy_url)
    case.validate_response(response, checks=CHECKS)
    assert_error_body(response)


def _examples(spec: dict[str, Any], path: str) -> Any:
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return schema["examples"][0]


@pytest.mark.parametrize("service", ["ingest", "legacy"])
def test_the_spec_examples_are_accepted_whenever_the_app_was_built(
    service: str, request: pytest.FixtureRequest, ingest_key: str
) -> None:
    url: str = request.getfixturevalue(f"{service}_url")
    spec = httpx.get(f"{url}/openapi.json").json()
    one, batch = _examples(spec, "/ingest/barcode"), _examples(spec, "/ingest/barcodes")
    parse_scan(one, ScanRules())  # valid by the domain's own rules, now
    assert abs(one["scanTime"] - time.time() * 1000) < 3_600_000  # the app's build time, not a fixed date
    auth = client_headers(ingest_key)
    assert httpx.post(f"{url}/ingest/barcode", json=one, headers=auth, timeout=30).status_code == 202
    assert httpx.post(f"{url}/ingest/barcodes", json=batch, headers=auth, timeout=30).status_code == 200


@pytest.mark.parametrize("service", ["ingest", "legacy"])
def test_the_batch_limit_is_in_the_spec_with_its_status(
    service: str, request: pytest.FixtureRequest, stack_settings: Settings, ingest_key: str
) -> None:
    url: str = request.getfixturevalue(f"{service}_url")
    operation = httpx.get(f"{url}/openapi.json").json()["paths"]["/ingest/barcodes"]["post"]
    limit = stack_settings.ingest.max_batch_items
    assert operation["requestBody"]["content"]["application/json"]["schema"]["maxItems"] == limit
    assert f"more than {limit} scans" in operation["responses"]["413"]["description"]
    example = _examples({"paths": {"/ingest/barcodes": {"post": operation}}}, "/ingest/barcodes")[0]
    too_many = [{**example, "scanId": f"limit-{i}"} for i in range(limit + 1)]
    response = httpx.post(
        f"{url}/ingest/barcodes", json=too_many, headers=client_headers(ingest_key), timeout=30
    )
    assert response.status_code == 413 and response.json()["error"] == "too_large"


hostile_header_values = [
    "' OR '1'='1",
    "FLUSHALL",
    "*1\\r\\n$8\\r\\nFLUSHALL",
    "bpk_'; DROP TABLE scanner_keys;--",
]


@pytest.mark.parametrize("value", hostile_header_values)
def test_hostile_keys_are_refused_not_executed(ingest_url: str, value: str, stack_settings: Settings) -> None:
    body = {"barcode": "B1", "deviceId": "SEOUL-CENTER-PC-001", "scanTime": int(time.time() * 1000)}
    for headers in ({"Authorization": f"Bearer {value}"}, {"X-API-Key": value}):
        response = httpx.post(f"{ingest_url}/ingest/barcode", json=body, headers=headers, timeout=30)
        assert response.status_code == 401
        assert_error_body(response)
