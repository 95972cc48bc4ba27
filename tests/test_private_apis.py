"""The library internals the code reaches into are still there.

``pyproject.toml`` bounds these libraries below their next minor release and ``uv.lock`` pins them, but
whoever raises a bound (``make lock``) learns here, with the attribute named, what an upgrade removed,
instead of from a hot path that breaks at run time. Each entry says which module of ours relies on it.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, attribute path, who relies on it)
INTERNALS: list[tuple[str, str, str]] = [
    # web/onewrite.py: subclasses the protocol and wraps the transport it is handed.
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.connection_made", "web/onewrite.py"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.__init__", "web/onewrite.py"),
    # web/headguard.py: counts the head's bytes around the parser's feed and hooks its callbacks.
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.data_received", "web/headguard.py"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.on_message_begin", "web/headguard.py"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.on_headers_complete", "web/headguard.py"),
    ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol.connection_lost", "web/headguard.py"),
    # web/reuseport.py: replaces three methods of the supervisor and builds its processes itself.
    ("uvicorn.config", "STARTUP_FAILURE", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Multiprocess.init_processes", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Multiprocess.keep_subprocess_alive", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Multiprocess.restart_all", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Process.is_alive", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Process.wait_until_ready", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Process.kill", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Process.terminate", "web/reuseport.py"),
    ("uvicorn.supervisors.multiprocess", "Process.exitcode", "web/reuseport.py"),
    # web/app.py: the instance fastapi-offline builds is a FastAPI whose class is swapped.
    ("fastapi_offline", "FastAPIOffline", "web/app.py"),
    ("fastapi.applications", "FastAPI.__call__", "web/app.py"),
    # Kafka's internal error codes (librdkafka's negative codes), matched on the hot paths.
    ("confluent_kafka", "KafkaError._PARTITION_EOF", "processor/service.py, ops/dlt.py"),
    ("confluent_kafka", "KafkaError._MSG_TIMED_OUT", "ingest/producer.py"),
    ("confluent_kafka", "KafkaError._ALL_BROKERS_DOWN", "ingest/producer.py"),
    ("confluent_kafka", "KafkaError._FATAL", "processor/fencing.py"),
    ("confluent_kafka", "KafkaError._AUTHENTICATION", "adapters/kafka.py"),
    ("confluent_kafka", "KafkaError._SSL", "adapters/kafka.py"),
    ("confluent_kafka", "KafkaError._TRANSPORT", "adapters/kafka.py"),
    # The ACL types have no explicit export in the package's stubs (harness stack/secure.py).
    ("confluent_kafka.admin._acl", "AclBinding", "harness stack/secure.py"),
    ("confluent_kafka.admin._resource", "ResourcePatternType", "harness stack/secure.py"),
    ("confluent_kafka.admin._config", "ConfigResource", "adapters/kafka.py (topic retention)"),
    ("confluent_kafka.admin._config", "ConfigEntry", "adapters/kafka.py (topic retention)"),
    ("confluent_kafka.admin._config", "AlterConfigOpType.SET", "adapters/kafka.py (topic retention)"),
]


def resolve(module: str, path: str) -> object:
    target: object = importlib.import_module(module)
    for part in path.split("."):
        target = getattr(target, part)
    return target


@pytest.mark.parametrize(("module", "path", "user"), INTERNALS, ids=[f"{m}:{p}" for m, p, _ in INTERNALS])
def test_internal_still_exists(module: str, path: str, user: str) -> None:
    try:
        resolve(module, path)
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            f"{module}.{path} is gone ({exc}); {user} relies on it: adapt it before raising the bound"
        )


def test_uvicorn_process_takes_config_and_sockets() -> None:
    """web/reuseport.py builds ``Process(config, [socket])`` for a slot's replacement."""
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    for cls in (Process, Multiprocess):
        params = list(inspect.signature(cls.__init__).parameters)
        assert params[1:3] == ["config", "sockets"], f"uvicorn {cls.__name__}.__init__ is now {params}"


def test_uvicorn_protocol_keeps_its_loop() -> None:
    """web/onewrite.py reads ``self.loop`` of the protocol to schedule the held header's flush."""
    import asyncio

    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = uvicorn.Config(app=lambda *_: None, lifespan="off")
    config.load()
    # web/reuseport.py bounds its health checks with the config's own timeout
    assert hasattr(config, "timeout_worker_healthcheck"), "uvicorn Config.timeout_worker_healthcheck is gone"
    loop = asyncio.new_event_loop()
    try:
        protocol = HttpToolsProtocol(config, ServerState(), app_state={}, _loop=loop)
        assert protocol.loop is loop, "uvicorn HttpToolsProtocol.loop is gone"
    finally:
        loop.close()


def test_prometheus_histogram_internals() -> None:
    """worker/metrics.py writes a batch of samples through a histogram's bucket values (it falls back to
    ``observe`` without them, slower: this says when that started)."""
    from prometheus_client import CollectorRegistry, Histogram

    histogram = Histogram("bp_private_api_probe", "probe", registry=CollectorRegistry())
    for name in ("_upper_bounds", "_buckets", "_sum"):
        assert hasattr(histogram, name), f"prometheus_client Histogram.{name} is gone (worker/metrics.py)"
