"""The ingest API against the real Kafka of the local stack (in-process app via TestClient)."""

from __future__ import annotations

import secrets
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import pytest

# The package re-exports these without __all__, which mypy --strict does not accept.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import derive_scan_id
from barcode_pipeline.ingest.app import create_app
from barcode_pipeline.ingest.producer import KafkaBridge
from tests.conftest import LOOPBACK_CLIENT
from tests.ingest.conftest import TEST_DEVICE_PREFIX, TcpForwarder, TopicReader, scan

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def test_one_scan_is_confirmed_and_on_the_topic(client: TestClient, topic_reader: TopicReader) -> None:
    body = scan()
    response = client.post("/ingest/barcode", content=orjson.dumps(body))
    assert response.status_code == 202, response.text
    assert response.json() == {"scanId": body["scanId"], "status": "accepted"}
    assert response.headers["content-type"] == "application/json"

    records = topic_reader.read(want={body["scanId"]})
    key, value = records[body["scanId"]]
    assert key == body["deviceId"].encode()
    assert orjson.loads(value) == body


def test_scan_without_scan_id_gets_the_derived_one(client: TestClient, topic_reader: TopicReader) -> None:
    body = scan()
    del body["scanId"]
    response = client.post("/ingest/barcode", content=orjson.dumps(body))
    assert response.status_code == 202, response.text
    expected = derive_scan_id(body["deviceId"], body["barcode"], body["scanTime"])
    assert response.json()["scanId"] == expected
    assert expected in topic_reader.read(want={expected})


@pytest.mark.parametrize("raw", [b"{bad", b"", b'{"barcode": "A"', b"\xff\xfe", b"[1,]"])
@pytest.mark.usefixtures("nothing_reaches_kafka")
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    for route in ("/ingest/barcode", "/ingest/barcodes"):
        response = client.post(route, content=raw)
        assert response.status_code == 400, (route, response.text)
        assert response.json()["error"] == "malformed_json"


def _now() -> int:
    return int(time.time() * 1000)


RULES: list[tuple[str, dict[str, Any] | Callable[[], dict[str, Any]]]] = [
    ("barcode", {"barcode": None}),
    ("barcode", {"barcode": ""}),
    ("barcode", {"barcode": "HAS SPACE"}),
    ("barcode", {"barcode": "X" * 65}),
    ("barcode", {"barcode": "바코드"}),
    ("barcode", {"barcode": 12345}),
    ("deviceId", {"deviceId": None}),
    ("deviceId", {"deviceId": "bad/device"}),
    ("deviceId", {"deviceId": "D" * 65}),
    ("scanTime", {"scanTime": None}),
    ("scanTime", {"scanTime": "1700000000000"}),
    ("scanTime", {"scanTime": -5}),
    ("scanTime", {"scanTime": True}),
    ("scanTime", {"scanTime": 1.5}),
    ("scanTime", lambda: {"scanTime": _now() + 60_000}),
    ("scanTime", lambda: {"scanTime": _now() - 31 * DAY_MS}),
    ("scanId", {"scanId": "bad id"}),
    ("scanId", {"scanId": "s" * 65}),
    ("scanId", {"scanId": 7}),
]


@pytest.mark.parametrize(("field", "change"), RULES)
@pytest.mark.usefixtures("nothing_reaches_kafka")
def test_each_rule_is_422_naming_the_field(
    client: TestClient, field: str, change: dict[str, Any] | Callable[[], dict[str, Any]]
) -> None:
    body = scan(**(change() if callable(change) else change))
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/ingest/barcode", content=orjson.dumps(body))
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] == "validation"
    assert error["field"] == field
    assert "index" not in error
    assert error["message"]


@pytest.mark.usefixtures("nothing_reaches_kafka")
def test_non_object_scan_is_422(client: TestClient) -> None:
    response = client.post("/ingest/barcode", content=b"[]")
    assert response.status_code == 422
    assert response.json()["field"] == "body"


def test_batch_with_an_invalid_item_is_rejected_whole(client: TestClient, topic_reader: TopicReader) -> None:
    batch = [scan() for _ in range(5)]
    batch[3]["deviceId"] = "not valid!"
    response = client.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "deviceId"
    assert response.json()["index"] == 3

    written = topic_reader.read(want=None)  # everything up to the current end of the topic
    assert not {item["scanId"] for item in batch} & set(written)


def test_batch_is_200_with_counts_and_every_scan_on_the_topic(
    client: TestClient, topic_reader: TopicReader
) -> None:
    batch = [scan() for _ in range(25)]
    del batch[0]["scanId"]
    response = client.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert response.status_code == 200, response.text
    assert response.json() == {"total": 25, "succeeded": 25, "failedIndices": []}

    ids = {
        item.get("scanId") or derive_scan_id(item["deviceId"], item["barcode"], item["scanTime"])
        for item in batch
    }
    assert ids <= set(topic_reader.read(want=ids))


def test_empty_batch_is_200(client: TestClient) -> None:
    response = client.post("/ingest/barcodes", content=b"[]")
    assert response.status_code == 200
    assert response.json() == {"total": 0, "succeeded": 0, "failedIndices": []}


def test_batch_that_is_not_an_array_is_422(client: TestClient) -> None:
    response = client.post("/ingest/barcodes", content=orjson.dumps(scan()))
    assert response.status_code == 422
    assert response.json()["field"] == "body"


@pytest.mark.usefixtures("nothing_reaches_kafka")
def test_oversize_body_is_413(client: TestClient, stack_settings: Settings) -> None:
    too_big = b" " * (stack_settings.ingest.max_body_bytes + 1)
    for route in ("/ingest/barcode", "/ingest/barcodes"):
        response = client.post(route, content=too_big)  # Content-Length is checked before reading
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "too_large"

    def chunks() -> Any:  # chunked: no Content-Length, so the capped read has to catch it
        for _ in range(stack_settings.ingest.max_body_bytes // 4096 + 2):
            yield b" " * 4096

    response = client.post("/ingest/barcode", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_batch_over_max_items_is_413(app_client: Callable[..., TestClient]) -> None:
    with app_client(max_batch_items=3) as small:
        response = small.post("/ingest/barcodes", content=orjson.dumps([scan() for _ in range(4)]))
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"
        assert small.post("/ingest/barcodes", content=orjson.dumps([scan()] * 3)).status_code == 200


def test_health_ready_and_errors_are_json(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready", "kafka": "up"}
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong_method = client.get("/ingest/barcode")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "http"


def test_openapi_documents_the_schemas(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    one = spec["paths"]["/ingest/barcode"]["post"]
    body_schema = one["requestBody"]["content"]["application/json"]["schema"]
    assert set(body_schema["properties"]) == {"barcode", "deviceId", "scanTime", "scanId"}
    assert {"202", "400", "413", "422", "503"} <= set(one["responses"])
    assert "Retry-After" in one["responses"]["503"]["headers"]
    batch = spec["paths"]["/ingest/barcodes"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["type"] == "array"
    assert {"200", "207", "413", "422", "503"} <= set(batch["responses"])
    assert {"Accepted", "BatchResult", "ErrorBody"} <= set(spec["components"]["schemas"])
    assert client.get("/docs").status_code == 200


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_and_deliveries(client: TestClient) -> None:
    accepted = ("bp_ingest_accepted_total", ())
    produced = ("bp_ingest_produce_seconds_count", ())
    requests = ("bp_ingest_request_seconds_count", (("route", "/ingest/barcode"), ("status", "202")))
    refused = ("bp_ingest_request_seconds_count", (("route", "/ingest/barcode"), ("status", "422")))
    before = _samples(client.get("/metrics").text)
    for _ in range(3):
        assert client.post("/ingest/barcode", content=orjson.dumps(scan())).status_code == 202
    assert client.post("/ingest/barcode", content=orjson.dumps(scan(barcode=""))).status_code == 422
    after = _samples(client.get("/metrics").text)
    assert after[accepted] - before.get(accepted, 0) == 3
    assert after[produced] - before.get(produced, 0) == 3
    assert after[requests] - before.get(requests, 0) == 3
    assert after[refused] - before.get(refused, 0) == 1
    failures = {k for k in (*before, *after) if k[0] == "bp_ingest_delivery_failures_total"}
    assert all(after.get(k, 0) == before.get(k, 0) for k in failures)  # none of these writes failed


def _wait_ready(client: TestClient, within_s: float, message: str) -> None:
    deadline = time.monotonic() + within_s
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_kafka_unreachable_answers_503_fast(app_client: Callable[..., TestClient]) -> None:
    timeout = 1.0
    # Far below librdkafka's own message timeout (minutes), with room for a loaded CI machine.
    fast = timeout + 4
    with app_client(kafka_bootstrap="127.0.0.1:1", produce_timeout_s=timeout) as down:
        assert down.get("/health").status_code == 200
        ready = down.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["kafka"] == "down"
        for _ in range(3):  # every attempt, not just the first, must be answered quickly
            started = time.monotonic()
            response = down.post("/ingest/barcode", content=orjson.dumps(scan()))
            assert time.monotonic() - started < fast
            assert response.status_code == 503
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"] == "unavailable"
        batch = down.post("/ingest/barcodes", content=orjson.dumps([scan(), scan()]))
        assert batch.status_code == 503
        assert batch.headers["retry-after"].isdigit()
        assert batch.json()["failedIndices"] == [0, 1]
        assert 'bp_ingest_delivery_failures_total{reason="unavailable"}' in down.get("/metrics").text


def test_unconfirmed_write_is_503_and_the_service_recovers(
    make_settings: Callable[..., Settings], ingest_key: str
) -> None:
    """A write Kafka cannot confirm in time -> 503; the breaker closes again once Kafka confirms."""
    settings = make_settings(produce_timeout_s=0.2)
    # A linger longer than the produce timeout: the broker is fine, the confirmation just comes late.
    bridge = KafkaBridge(settings, producer_overrides={"linger.ms": 600, "message.timeout.ms": 10_000})
    app = create_app(settings, bridge=bridge)
    with TestClient(
        app, raise_server_exceptions=False, client=LOOPBACK_CLIENT, headers=client_headers(ingest_key)
    ) as slow:
        # The start-up probe has only min(produce timeout, 1 s) to connect; the monitor keeps probing.
        _wait_ready(slow, 10, "Kafka never became ready")
        started = time.monotonic()
        response = slow.post("/ingest/barcode", content=orjson.dumps(scan()))
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"].isdigit()
        # Not before the timeout (it is honoured), and long before the 600 ms linger + slack would be.
        assert 0.15 < elapsed < 3, elapsed
        _wait_ready(slow, 15, "the breaker never closed again")


def test_recovers_by_itself_when_kafka_becomes_reachable(
    app_client: Callable[..., TestClient], stack_settings: Settings, topic_reader: TopicReader
) -> None:
    """Start with nothing listening at the bootstrap address, then let Kafka "come back" there."""
    host, _, port = stack_settings.kafka.bootstrap.rpartition(":")
    forwarder = TcpForwarder((host, int(port)))  # bound but not listening yet: connections are refused
    # The first write after the reconnect needs a producer id and an acks=all round trip: a generous
    # produce timeout (the breaker makes the writes while Kafka is away fail at once regardless).
    try:
        with app_client(kafka_bootstrap=f"127.0.0.1:{forwarder.port}", produce_timeout_s=5.0) as later:
            assert later.post("/ingest/barcode", content=orjson.dumps(scan())).status_code == 503
            assert later.get("/ready").status_code == 503
            forwarder.start()
            _wait_ready(later, 20, "did not recover after Kafka became reachable")
            body = scan()
            response = later.post("/ingest/barcode", content=orjson.dumps(body))
            assert response.status_code == 202, response.text
            assert body["scanId"] in topic_reader.read(want={body["scanId"]})
    finally:
        forwarder.stop()


@contextmanager
def topic_max_message_bytes(settings: Settings, limit: int) -> Iterator[None]:
    """The event topic refuses record batches over ``limit`` bytes while inside (the broker's own check)."""
    admin = kafka_adapter.admin(settings)

    def alter(op: AlterConfigOpType, value: str) -> None:
        entry = ConfigEntry("max.message.bytes", value, incremental_operation=op)
        resource = ConfigResource(ResourceType.TOPIC, names.TOPIC, incremental_configs=[entry])
        for fut in admin.incremental_alter_configs([resource]).values():
            fut.result(15)

    alter(AlterConfigOpType.SET, str(limit))
    try:
        yield
    finally:
        alter(AlterConfigOpType.DELETE, "")


def _scan_on_its_own_partition(partitions: int, taken: int) -> dict[str, Any]:
    """A small scan whose device (the key) maps to another partition than ``taken`` (librdkafka's
    default partitioner is CRC32 of the key), so it never shares a record batch with the big ones."""
    while True:
        small = scan(barcode="S1", scanId=f"s-{uuid.uuid4().hex[:6]}")
        if zlib.crc32(small["deviceId"].encode()) % partitions != taken:
            return small


def test_batch_partly_refused_by_kafka_is_207_with_the_failed_indices(
    app_client: Callable[..., TestClient], stack_settings: Settings, topic_reader: TopicReader
) -> None:
    """The broker refuses the record batches of one partition (over the topic's size limit) and
    takes the other's: the answer names exactly the refused indices, and only the rest is on the topic.

    Big scans (64 random characters in barcode, device and scanId: a record batch over 300 bytes)
    all go to one partition; one small scan (a batch of about 150 bytes) to another; limit 200.
    """
    big_device = f"{TEST_DEVICE_PREFIX}{secrets.token_hex(26)}"  # 64 characters
    taken = zlib.crc32(big_device.encode()) % stack_settings.kafka.topic_partitions

    def big() -> dict[str, Any]:
        return scan(deviceId=big_device, barcode=secrets.token_hex(32), scanId=secrets.token_hex(32))

    with app_client() as ingest:
        _wait_ready(ingest, 20, "Kafka never became ready")
        with topic_max_message_bytes(stack_settings, 200):
            deadline = time.monotonic() + 60
            while True:  # the topic's new limit reaches the broker's log layer within moments
                small = _scan_on_its_own_partition(stack_settings.kafka.topic_partitions, taken)
                batch = [big(), small, big(), big()]
                reply = ingest.post("/ingest/barcodes", content=orjson.dumps(batch))
                if reply.status_code != 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert reply.status_code == 207, reply.text
        assert reply.json() == {"total": 4, "succeeded": 1, "failedIndices": [0, 2, 3]}
        metrics = _samples(ingest.get("/metrics").text)
        assert metrics[("bp_ingest_delivery_failures_total", (("reason", "rejected"),))] >= 3
        restored = time.monotonic() + 60
        while ingest.post("/ingest/barcodes", content=orjson.dumps([big()])).status_code != 200:
            assert time.monotonic() < restored, "the topic's size limit was not lifted"
            time.sleep(0.2)
    written = topic_reader.read(want=None)  # everything up to the current end of the topic
    assert small["scanId"] in written
    assert not {item["scanId"] for i, item in enumerate(batch) if i != 1} & set(written)
