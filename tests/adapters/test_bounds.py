"""Every client the services build carries a bound on its blocking calls.

The Kafka clients are checked on the configuration the services hand to confluent-kafka (which
offers no read-back): the constructors are wrapped, the real clients still built. Redis and the
database are checked on the client objects themselves.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.ingest import producer as ingest_producer
from barcode_pipeline.probes import backlog
from barcode_pipeline.processor import service as processor_service
from barcode_pipeline.worker.service import Worker, WorkerOptions

# A closed port: building a client must not need a server.
NOWHERE = Settings(
    kafka_bootstrap="127.0.0.1:9",
    redis_url="redis://127.0.0.1:9/0",
    db_url="mysql://u:p@127.0.0.1:9/x",
    kafka_socket_timeout_ms=12_345,
    kafka_connect_timeout_ms=6_789,
    redis_socket_timeout_s=4.5,
    redis_connect_timeout_s=2.5,
    db_connect_timeout_s=3,
    db_read_timeout_s=41,
    db_write_timeout_s=42,
)


class Recorder:
    """Wraps a confluent-kafka client class: remembers each configuration, builds the real client."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.configs: list[dict[str, Any]] = []

    def __call__(self, conf: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.configs.append(dict(conf))
        return self.cls(conf, *args, **kwargs)


def _assert_kafka_bounds(conf: dict[str, Any]) -> None:
    assert conf["socket.timeout.ms"] == 12_345
    assert conf["socket.connection.setup.timeout.ms"] == 6_789


def test_processor_clients_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    consumers, producers = Recorder(Consumer), Recorder(Producer)
    monkeypatch.setattr(processor_service, "Consumer", consumers)
    monkeypatch.setattr(processor_service, "Producer", producers)
    proc = processor_service.Processor(NOWHERE, instance="bounds-test")
    try:
        assert len(consumers.configs) == 1 and len(producers.configs) == 1
        _assert_kafka_bounds(consumers.configs[0])
        _assert_kafka_bounds(producers.configs[0])
        assert producers.configs[0]["message.timeout.ms"] == int(NOWHERE.kafka.produce_timeout_s * 1000)
        kwargs = proc.redis.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 4.5
        assert kwargs["socket_connect_timeout"] == 2.5
    finally:
        proc.consumer.close()
        proc.redis.close()


def test_ingest_producer_and_status_consumer_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    producers, consumers = Recorder(Producer), Recorder(Consumer)
    monkeypatch.setattr(ingest_producer, "Producer", producers)
    monkeypatch.setattr(backlog, "Consumer", consumers)
    bridge = ingest_producer.KafkaBridge(NOWHERE)
    bridge._new_producer()
    _assert_kafka_bounds(producers.configs[0])
    assert producers.configs[0]["message.timeout.ms"] == int(NOWHERE.kafka.produce_timeout_s * 1000)
    with pytest.raises(Exception):  # noqa: B017 - nothing listens; only the configuration matters
        backlog.kafka_lag(NOWHERE)
    _assert_kafka_bounds(consumers.configs[0])
    _assert_kafka_bounds(kafka_adapter.admin_config(NOWHERE))


def test_worker_clients_are_bounded_and_the_read_block_fits_the_socket_timeout() -> None:
    worker = Worker(NOWHERE, WorkerOptions(name="bounds-test"))
    kwargs = worker.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 4.5
    assert kwargs["socket_connect_timeout"] == 2.5
    # XREADGROUP BLOCK answers after the block time: the socket must wait longer than that.
    assert worker.options.idle_block_s < kwargs["socket_timeout"]
    timeouts = worker.store._timeouts
    assert (timeouts.connect_s, timeouts.read_s, timeouts.write_s) == (3, 41, 42)
    worker.client.close()
    with pytest.raises(ConfigError, match="BP_REDIS_SOCKET_TIMEOUT_S"):
        Worker(NOWHERE, WorkerOptions(name="bounds-test", idle_block_s=4.5))


@pytest.mark.integration
def test_db_connections_carry_connect_read_and_write_timeouts(stack_settings: Settings) -> None:
    """On a real connection: the worker's store and the adapter default (used by tools, legacy)."""
    settings = stack_settings.updated({"db_read_timeout_s": 41, "db_write_timeout_s": 42})
    worker = Worker(settings, WorkerOptions(name="bounds-test"))
    try:
        conn = worker.store._connection()
        assert (conn.connect_timeout, conn._read_timeout, conn._write_timeout) == (5, 41, 42)
    finally:
        worker.store.close()
        worker.client.close()
    plain = connect(stack_settings.db.url)
    try:
        assert plain._read_timeout == 60 and plain._write_timeout == 60 and plain.connect_timeout == 5
    finally:
        plain.close()
