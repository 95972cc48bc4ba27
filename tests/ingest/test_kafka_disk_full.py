"""A Kafka broker whose log directory fills up, for real: a scratch broker on a small tmpfs.

On a write that fails for lack of space the broker takes the log directory offline; with its only
directory offline it stops. Ingest must answer 503 from then on (never 2xx for a scan Kafka does
not hold), and once space is freed and the broker is started again (its service manager's job)
ingest recovers by itself, without a restart, and every scan it acknowledged is on the topic once.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from fastapi.testclient import TestClient

from barcode_harness.stack.kafka import KafkaComponent
from barcode_pipeline import names
from barcode_pipeline.adapters.kafka import consumer_config, ensure_topics
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app
from tests.conftest import LOOPBACK_CLIENT
from tests.ingest.conftest import scan
from tests.stack_helpers import free_ports

pytestmark = pytest.mark.integration

TMPFS_BYTES = 48 * 2**20
BATCH = 100


@pytest.fixture
def kafka_on_small_disk(
    stack_settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, KafkaComponent]]:
    """A scratch single-node KRaft broker (the stack's jars) whose log dir is a 48 MiB tmpfs."""
    port = free_ports(2)
    settings = stack_settings.updated(
        {
            "state_dir": tmp_path / "state",
            "kafka_bootstrap": f"127.0.0.1:{port}",
            "kafka_controller_port": port + 1,
            "kafka_heap": "256m",
            "topic_partitions": 2,
        }
    )
    broker = KafkaComponent(settings)
    broker.data_dir.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(broker.data_dir)]
    subprocess.run(mount, check=True)
    try:
        broker.start()
        ensure_topics(settings)
        yield settings, broker
    finally:
        broker.kill()
        time.sleep(0.5)
        subprocess.run(["umount", "-l", str(broker.data_dir)], check=False)


def _topic_scan_ids(settings: Settings) -> list[str]:
    """Every scanId on the event topic, in full (a duplicate would appear twice)."""
    group = f"full-{uuid.uuid4().hex}"
    consumer = Consumer(consumer_config(settings, group, **{"enable.partition.eof": True}))
    partitions = consumer.list_topics(names.TOPIC, timeout=10).topics[names.TOPIC].partitions
    consumer.assign([TopicPartition(names.TOPIC, p, 0) for p in partitions])
    found: list[str] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while at_end != set(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(msg.partition() or 0)
                continue
            found.append(orjson.loads(msg.value() or b"{}")["scanId"])
    finally:
        consumer.close()
    assert at_end == set(partitions), "the topic could not be read to its end"
    return found


def test_ingest_answers_503_while_kafka_cannot_write_and_loses_no_acknowledged_scan(
    kafka_on_small_disk: tuple[Settings, KafkaComponent], ingest_key: str
) -> None:
    settings, broker = kafka_on_small_disk
    app = create_app(settings.updated({"produce_timeout_s": 2.0}))
    acked: list[str] = []
    refused = 0
    with TestClient(
        app, raise_server_exceptions=False, client=LOOPBACK_CLIENT, headers=client_headers(ingest_key)
    ) as client:
        # Fill the disk: a ballast file leaves a little room, which the scans then take.
        ballast = broker.data_dir / "ballast"
        ballast.write_bytes(b"\0" * (TMPFS_BYTES - 6 * 2**20))
        deadline = time.monotonic() + 120
        while refused < 5:
            assert time.monotonic() < deadline, f"Kafka never refused a write ({len(acked)} acknowledged)"
            scans = [scan(barcode="X" * 60) for _ in range(BATCH)]
            response = client.post("/ingest/barcodes", content=orjson.dumps(scans))
            failed = set(response.json().get("failedIndices", [])) if response.status_code != 200 else set()
            assert response.status_code in (200, 207, 503), response.text
            acked += [s["scanId"] for i, s in enumerate(scans) if i not in failed]
            if response.status_code == 503:
                assert response.headers["retry-after"].isdigit()
                refused += 1
        assert client.get("/ready").status_code == 503, "ready while Kafka cannot write"
        single = client.post("/ingest/barcode", content=orjson.dumps(scan()))
        assert single.status_code == 503 and single.json()["error"] == "unavailable"

        ballast.unlink()  # room again; the broker is started by its service manager (here: the test)
        broker.start()
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "ingest did not recover after the broker came back"
            time.sleep(0.2)
        after = scan()
        assert client.post("/ingest/barcode", content=orjson.dumps(after)).status_code == 202
        acked.append(after["scanId"])
    on_topic = _topic_scan_ids(settings)
    assert len(acked) > BATCH, "the disk filled before any scan was acknowledged: nothing was tested"
    missing = set(acked) - set(on_topic)
    assert not missing, f"{len(missing)} acknowledged scans are not on the topic"
    assert len(on_topic) == len(set(on_topic)), "a scan is on the topic twice"
