"""An ingest producer that cannot see a Kafka that a new client sees is replaced (real broker)."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from fastapi.testclient import TestClient

from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app
from barcode_pipeline.ingest.producer import KafkaBridge
from tests.conftest import LOOPBACK_CLIENT
from tests.ingest.conftest import scan
from tests.ingest.test_api import _wait_ready

pytestmark = pytest.mark.integration


def test_a_producer_blind_to_a_reachable_kafka_is_replaced(
    make_settings: Callable[..., Settings], ingest_key: str
) -> None:
    settings = make_settings()
    # The first producer asks a port where nothing listens, so to it Kafka is down for good, while
    # a new client (the second opinion) reaches the real broker at the settings' address.
    bridge = KafkaBridge(settings, producer_overrides={"bootstrap.servers": "127.0.0.1:1"})
    app = create_app(settings, bridge=bridge)
    with TestClient(
        app, raise_server_exceptions=False, client=LOOPBACK_CLIENT, headers=client_headers(ingest_key)
    ) as client:
        assert client.get("/ready").status_code == 503
        bridge._overrides.clear()  # its replacement is built from the settings alone
        _wait_ready(client, 20, "the blind producer was never replaced")
        response = client.post("/ingest/barcode", content=orjson.dumps(scan()))
        assert response.status_code == 202, response.text
