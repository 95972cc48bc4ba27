"""Fixtures and helpers for ingest tests against the real Kafka of the local stack.

Records are read back by assigning a fresh consumer to the offsets noted just before a request,
so a test only reads what was written after it started, however full the shared topic is.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from fastapi.testclient import TestClient

from barcode_pipeline import names
from barcode_pipeline.adapters.kafka import consumer_config, ensure_topics
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app
from tests.conftest import LOOPBACK_CLIENT
from tests.stack_helpers import FreezableRelay, retry_until

TEST_DEVICE_PREFIX = "INGEST-TEST-"


def scan(**overrides: Any) -> dict[str, Any]:
    """A valid wire-format scan with a unique scanId; keyword arguments replace fields."""
    body: dict[str, Any] = {
        "barcode": f"BC{uuid.uuid4().hex[:12]}",
        "deviceId": f"{TEST_DEVICE_PREFIX}{uuid.uuid4().hex[:6]}",
        "scanTime": int(time.time() * 1000),
        "scanId": f"ingest-test-{uuid.uuid4().hex}",
    }
    body.update(overrides)
    return body


class TopicReader:
    """Reads ``names.TOPIC`` from offsets noted by :meth:`mark`, with a fresh consumer group."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = Consumer(
            consumer_config(settings, f"ingest-test-{uuid.uuid4().hex}", **{"enable.partition.eof": True})
        )
        self._start: dict[int, int] = {}

    def mark(self) -> None:
        """Remember the current end of every partition (a broker another test just restarted may
        still be electing leaders: NOT_LEADER_FOR_PARTITION for a while, so the look is retried)."""
        retry_until(self._mark, KafkaException, "the topic's partitions had no leader for 30 s", timeout=30)

    def _mark(self) -> None:
        metadata = self._consumer.list_topics(names.TOPIC, timeout=10)
        partitions = metadata.topics[names.TOPIC].partitions
        self._start = {
            p: self._consumer.get_watermark_offsets(TopicPartition(names.TOPIC, p), timeout=10)[1]
            for p in partitions
        }

    def read(self, want: set[str] | None = None, timeout: float = 30.0) -> dict[str, tuple[bytes, bytes]]:
        """Records written since :meth:`mark`: scanId -> (key, value).

        Stops when every wanted scanId was seen, or (``want`` None) at the end of every partition.
        ``timeout`` only bounds a failing read (a loaded CI machine can be slow to deliver).
        """
        self._consumer.assign([TopicPartition(names.TOPIC, p, o) for p, o in self._start.items()])
        found: dict[str, tuple[bytes, bytes]] = {}
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition() or 0)
                        if want is None and at_end >= set(self._start):
                            break
                        continue
                    raise AssertionError(f"consumer error: {error}")
                value = msg.value() or b""
                try:
                    scan_id = orjson.loads(value).get("scanId")
                except (orjson.JSONDecodeError, AttributeError):
                    continue  # someone else's poison test record
                if isinstance(scan_id, str):
                    found[scan_id] = (msg.key() or b"", value)
                if want is not None and want <= set(found):
                    break
        finally:
            self._consumer.unassign()
        return found

    def count(self) -> int:
        """Records written since :meth:`mark`, whatever they hold (even bytes that are not JSON)."""
        return sum(
            self._consumer.get_watermark_offsets(TopicPartition(names.TOPIC, p), timeout=10)[1] - start
            for p, start in self._start.items()
        )

    def close(self) -> None:
        self._consumer.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# Relays a loopback port to the real broker, so a test can make Kafka "appear" at that address. Only
# the bootstrap connection goes through it (the broker then advertises its own address), which is
# what a client sees when a Kafka that was unreachable comes back. The port is bound (not listening,
# so connections are refused) from construction on: nothing else can take it before start().
TcpForwarder = FreezableRelay


@pytest.fixture
def topic_reader(stack_settings: Settings) -> Iterator[TopicReader]:
    reader = TopicReader(stack_settings)
    reader.mark()
    yield reader
    reader.close()


@pytest.fixture
def nothing_reaches_kafka(client: TestClient, topic_reader: TopicReader) -> Iterator[None]:
    """After the test: not one record was written, except a valid scan sent last as a witness.

    The witness is confirmed (acks=all) before its 202, so anything a refused request had produced
    before it is on the topic by then, and the record count since the mark would be more than 1.
    """
    yield
    witness = scan()
    assert client.post("/ingest/barcode", content=orjson.dumps(witness)).status_code == 202
    assert witness["scanId"] in topic_reader.read(want={witness["scanId"]})
    assert topic_reader.count() == 1, "a refused request reached Kafka"


@pytest.fixture(scope="module")
def client(stack_settings: Settings, ingest_key: str) -> Iterator[TestClient]:
    """One app (one producer) against the stack's Kafka for the whole module; it sends the suite's key."""
    ensure_topics(stack_settings)
    app = create_app(stack_settings)
    with TestClient(
        app, raise_server_exceptions=False, client=LOOPBACK_CLIENT, headers=client_headers(ingest_key)
    ) as test_client:
        yield test_client


@pytest.fixture
def app_client(make_settings: Callable[..., Settings], ingest_key: str) -> Callable[..., TestClient]:
    """Factory for a client of an app with overridden settings (the caller enters it with ``with``)."""

    def factory(**overrides: Any) -> TestClient:
        app = create_app(make_settings(**overrides))
        return TestClient(
            app, raise_server_exceptions=False, client=LOOPBACK_CLIENT, headers=client_headers(ingest_key)
        )

    return factory
