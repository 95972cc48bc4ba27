"""Pure-logic unit tests of the ingest service (no Kafka, no network)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError
from starlette.types import Message

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.errors import DeliveryError, ValidationFailed
from barcode_pipeline.ingest.metrics import IngestMetrics
from barcode_pipeline.ingest.producer import (
    DeliveryTimeout,
    KafkaBridge,
    KafkaUnavailable,
    _settle,
    topic_problem,
)
from barcode_pipeline.web.body import BadBody, BodyTooLarge, read_capped
from barcode_pipeline.web.contract import RETRY_AFTER_S, unavailable, validation_failed
from barcode_pipeline.web.schemas import batch_schema, scan_schema
from tests.conftest import LOOPBACK_CLIENT

EVENT = ScanEvent(barcode="B1", device_id="DEV-1", scan_time=1, scan_id="s1")


def _receiver(messages: list[Message]) -> Any:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


# ----- body reading -----


def test_read_capped_single_chunk_is_returned_as_is() -> None:
    receive = _receiver([{"type": "http.request", "body": b"abc", "more_body": False}])
    assert asyncio.run(read_capped(receive, 10)) == b"abc"


def test_read_capped_joins_chunks() -> None:
    receive = _receiver(
        [
            {"type": "http.request", "body": b"ab", "more_body": True},
            {"type": "http.request", "body": b"", "more_body": True},
            {"type": "http.request", "body": b"cd", "more_body": True},
            {"type": "http.request", "body": b"e", "more_body": False},
        ]
    )
    assert asyncio.run(read_capped(receive, 5)) == b"abcde"


def test_read_capped_stops_at_the_limit() -> None:
    chunks: list[Message] = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 3
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_capped(_receiver(chunks), 1024))


def test_read_capped_reports_a_disconnect() -> None:
    receive = _receiver(
        [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"}]
    )
    with pytest.raises(BadBody):
        asyncio.run(read_capped(receive, 10))


# ----- responses -----


def test_validation_response_names_field_and_index() -> None:
    response = validation_failed(ValidationFailed("bad barcode", field="barcode", index=3))
    assert response.status_code == 422
    assert orjson.loads(bytes(response.body)) == {
        "error": "validation",
        "field": "barcode",
        "index": 3,
        "message": "bad barcode",
    }


def test_validation_response_of_a_single_scan_has_no_index() -> None:
    body = orjson.loads(bytes(validation_failed(ValidationFailed("x", field="scanTime")).body))
    assert body["field"] == "scanTime"
    assert "index" not in body


def test_unavailable_carries_retry_after() -> None:
    response = unavailable("down", total=2)
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert orjson.loads(bytes(response.body)) == {"error": "unavailable", "message": "down", "total": 2}


# ----- metrics -----


def test_metrics_render_all_instruments() -> None:
    metrics = IngestMetrics()
    metrics.observe_request("/ingest/barcode", 202, 0.002)
    metrics.observe_request("/ingest/barcode", 202, 0.004)
    metrics.produce_seconds.observe(0.001)
    metrics.delivery_failed("timeout", 2)
    metrics.accepted.inc()
    text = metrics.render().decode()
    assert 'bp_ingest_request_seconds_count{route="/ingest/barcode",status="202"} 2.0' in text
    assert "bp_ingest_produce_seconds_count 1.0" in text
    assert 'bp_ingest_delivery_failures_total{reason="timeout"} 2.0' in text
    assert "bp_ingest_accepted_total 1.0" in text


def test_each_app_gets_its_own_metrics() -> None:
    first, second = IngestMetrics(), IngestMetrics()
    first.accepted.inc()
    assert "bp_ingest_accepted_total 0.0" in second.render().decode()


# ----- topic readiness from metadata -----


def _metadata(topics: dict[str, Any]) -> Any:
    return SimpleNamespace(topics=topics)


def _topic(leaders: list[int], error: Any = None) -> Any:
    partitions = {i: SimpleNamespace(leader=leader) for i, leader in enumerate(leaders)}
    return SimpleNamespace(error=error, partitions=partitions)


def test_topic_problem() -> None:
    assert topic_problem(_metadata({names.TOPIC: _topic([1, 1, 1])})) is None
    assert "does not exist" in (topic_problem(_metadata({})) or "")
    assert "no leader" in (topic_problem(_metadata({names.TOPIC: _topic([1, -1])})) or "")
    assert "no partitions" in (topic_problem(_metadata({names.TOPIC: _topic([])})) or "")
    assert topic_problem(_metadata({names.TOPIC: _topic([1], error="UNKNOWN")})) is not None


# ----- bridge logic that needs no broker -----


def test_settle_completes_once() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        ok: asyncio.Future[None] = loop.create_future()
        _settle(ok, None)
        _settle(ok, KafkaError(KafkaError._MSG_TIMED_OUT))  # late report after success: ignored
        assert ok.result() is None
        failed: asyncio.Future[None] = loop.create_future()
        _settle(failed, KafkaError(KafkaError._MSG_TIMED_OUT))
        with pytest.raises(DeliveryError):
            failed.result()

    asyncio.run(run())


def test_send_fails_fast_while_kafka_is_unavailable() -> None:
    metrics = IngestMetrics()
    bridge = KafkaBridge(Settings(), metrics=metrics)  # never started: unavailable, no producer

    async def run() -> None:
        with pytest.raises(KafkaUnavailable):
            await bridge.send(EVENT)
        with pytest.raises(KafkaUnavailable):
            await bridge.send_many([EVENT, EVENT])
        assert await bridge.send_many([]) == []

    asyncio.run(run())
    assert 'bp_ingest_delivery_failures_total{reason="unavailable"} 3.0' in metrics.render().decode()


def test_breaker_trips_on_timeout_and_closes_on_success() -> None:
    bridge = KafkaBridge(Settings(produce_timeout_s=0.5))
    bridge._mark_up()
    assert bridge.available
    assert bridge.reason == ""

    async def run() -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        bridge._expire(fut)
        with pytest.raises(DeliveryTimeout):
            fut.result()

    asyncio.run(run())
    assert not bridge.available
    assert "not confirmed" in bridge.reason
    bridge._mark_up()
    assert bridge.available


def test_schemas_describe_the_wire_format() -> None:
    schema = scan_schema()
    assert set(schema["properties"]) == {"barcode", "deviceId", "scanTime", "scanId"}
    assert set(schema["required"]) == {"barcode", "deviceId", "scanTime"}
    assert batch_schema(7)["maxItems"] == 7
    # The example is dated when the app is built, so it never ages out of the accepted window.
    assert scan_schema(now_ms=123)["properties"]["scanTime"]["examples"] == [123]
    assert batch_schema(7, now_ms=456)["examples"][0][0]["scanTime"] == 456


class _BrokenBridge(KafkaBridge):
    """Not a Kafka fake: a bridge with a bug, to check what a client sees when the code itself fails."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._available = True

    def close(self) -> None:
        pass

    async def send(self, event: ScanEvent) -> None:
        raise RuntimeError("secret internals")


def test_an_unexpected_error_is_a_json_500_without_a_stack_trace() -> None:
    from fastapi.testclient import TestClient

    from barcode_pipeline.ingest.app import create_app

    settings = Settings(ingest_auth="off")
    app = create_app(settings, bridge=_BrokenBridge(settings))
    with TestClient(app, raise_server_exceptions=False, client=LOOPBACK_CLIENT) as client:
        body = orjson.dumps({"barcode": "B", "deviceId": "D", "scanTime": int(time.time() * 1000)})
        response = client.post("/ingest/barcode", content=body)
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal server error"}
    assert "secret" not in response.text


class _DownBridge(_BrokenBridge):
    """Kafka down, with the details a broker error carries (its address, the TLS failure)."""

    available = False

    async def send(self, event: ScanEvent) -> None:
        from barcode_pipeline.ingest.producer import KafkaUnavailable

        raise KafkaUnavailable(
            "10.0.0.7:9093/1: SSL handshake failed: certificate verify failed", component="kafka"
        )


def test_metrics_answer_their_scrapers_only_and_no_answer_names_kafka_s_internals() -> None:
    from fastapi.testclient import TestClient

    from barcode_pipeline.ingest.app import create_app

    settings = Settings(ingest_auth="off", metrics_from="127.0.0.0/8,10.9.0.0/16")
    app = create_app(settings, bridge=_DownBridge(settings))
    with TestClient(app, raise_server_exceptions=False, client=("10.9.1.2", 4000)) as prometheus:
        assert prometheus.get("/metrics").status_code == 200
    with TestClient(app, raise_server_exceptions=False, client=("203.0.113.9", 4000)) as outsider:
        refused = outsider.get("/metrics")
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        body = orjson.dumps({"barcode": "B", "deviceId": "D", "scanTime": int(time.time() * 1000)})
        down = outsider.post("/ingest/barcode", content=body)
        ready = outsider.get("/ready")
    assert down.status_code == 503 and ready.status_code == 503
    for answer in (down.text, ready.text):
        assert "10.0.0.7" not in answer and "SSL" not in answer and "Kafka" in answer
