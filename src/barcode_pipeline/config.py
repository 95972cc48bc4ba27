"""Typed, frozen settings read from the environment (prefix ``BP_``).

Only entrypoints (the CLI) call :func:`load_settings`; everything below receives a
``Settings`` object explicitly, so tests can build one with overrides and nothing
reads the environment behind their back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from barcode_pipeline import names
from barcode_pipeline.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of the pipeline. Defaults point at the local stack (``barcode-pipeline stack up``)."""

    model_config = SettingsConfigDict(env_prefix="BP_", frozen=True, extra="ignore")

    # --- connections (a user with their own servers only sets these three) ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6380/0"
    db_url: str = "mysql://barcode:barcode@127.0.0.1:3307/barcode"

    # --- local stack ---
    state_dir: Path = Path(".stack")
    cache_dir: Path = Path.home() / ".cache" / "barcode-pipeline"
    kafka_version: str = "4.1.1"
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    redis_appendfsync: Literal["everysec", "always", "no"] = "everysec"
    # Topology of `stack up`: one node each, or the replicated `ha` profile (stack/ha.py).
    stack_profile: Literal["single", "ha"] = "single"
    ha_subnet: str = "10.77.10.0/24"  # the ha profile's bridge; every node gets an address in it
    ha_kafka_heap: str = "384m"

    # --- Redis through Sentinel (empty: connect to redis_url directly) ---
    redis_sentinels: str = ""  # host:port,host:port,...
    redis_service: str = names.REDIS_SERVICE
    # The processor commits Kafka offsets only once this many replicas hold the batch (WAIT).
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=2000, ge=1)
    # When the primary changes (Sentinel mode), the processor re-reads what it committed this long
    # before it last saw the old primary (processor/failover.py).
    redis_rewind_window_s: float = Field(default=10.0, ge=0)

    # --- topic ---
    # A consumer silent this long is dropped from its group (its partitions go to the others).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=1_800_000)
    # librdkafka debug contexts for the services' consumers, e.g. "cgrp,consumer,protocol" (empty: off)
    kafka_debug: str = ""
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication: int = Field(default=1, ge=1)

    # --- ingest service ---
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8081
    ingest_processes: int = Field(default=2, ge=1)
    produce_timeout_s: float = Field(default=5.0, gt=0)
    linger_ms: float = Field(default=0.0, ge=0)  # librdkafka still batches while sends are in flight
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=1000, ge=1)
    scan_max_age_days: float = Field(default=30.0, gt=0)
    scan_max_future_ms: int = Field(default=1000, ge=0)

    # --- processor ---
    dedup_policy: Literal["event", "barcode"] = "event"
    dedup_ttl_s: int = Field(default=7 * 24 * 3600, ge=1)
    stream_shards: int = Field(default=4, ge=1)
    time_zone: str = "Asia/Seoul"
    processor_group: str = names.PROCESSOR_GROUP  # another group = an independent pipeline on one topic
    processors: int = Field(default=1, ge=1)  # processes in the consumer group (<= topic partitions)
    processor_batch: int = Field(default=500, ge=1)
    processor_poll_timeout_s: float = Field(default=0.05, gt=0)

    # --- persistence workers ---
    worker_batch_size: int = Field(default=500, ge=1)
    worker_max_delay_ms: int = Field(default=200, ge=0)
    worker_heartbeat_ttl_s: float = Field(default=5.0, gt=0)
    claim_min_idle_ms: int = Field(default=60_000, ge=0)
    max_deliveries: int = Field(default=5, ge=1)
    workers: int = Field(default=2, ge=1)
    # Extra workers read only when entries wait undelivered (fewer commits at low load); see worker/service.py
    worker_standby: bool = True
    # ... for this long, or a full batch of them: the primary worker has fallen behind.
    worker_standby_join_ms: int = Field(default=250, ge=0)
    # Workers delete acknowledged stream entries older than the retention this often (0: never;
    # the streams then grow forever). Kafka keeps the long-term log; see worker/retention.py.
    stream_trim_interval_s: float = Field(default=10.0, ge=0)
    stream_retention_s: float = Field(default=300.0, ge=0)

    # --- legacy synchronous baseline ---
    legacy_host: str = "127.0.0.1"
    legacy_port: int = 8080
    legacy_pool_size: int = Field(default=10, ge=1)
    legacy_threads: int = Field(default=40, ge=1)

    # --- bounds on every blocking call (a hung server surfaces as an error, never as a stall) ---
    # Kafka network requests (commit, offsets, metadata, close) and connection set-up.
    kafka_socket_timeout_ms: int = Field(default=30_000, ge=1_000)
    kafka_connect_timeout_ms: int = Field(default=10_000, ge=1_000)
    # Redis replies and connects; must exceed the longest XREADGROUP BLOCK (the workers' is 1 s).
    redis_socket_timeout_s: float = Field(default=5.0, gt=1.0)
    redis_connect_timeout_s: float = Field(default=5.0, gt=0)
    # Database connect, and each read or write of a statement (a batch INSERT, a migration step).
    db_connect_timeout_s: float = Field(default=5.0, ge=1)
    db_read_timeout_s: float = Field(default=60.0, ge=1)
    db_write_timeout_s: float = Field(default=60.0, ge=1)

    # --- liveness watchdog (supervisor; see run/watchdog.py) ---
    # A processor or worker whose stage has work waiting and that moved none for this long is
    # restarted, after its thread stacks are dumped to the log (0: watchdog off).
    stall_timeout_s: float = Field(default=30.0, ge=0)
    # The supervisor's /health and /metrics port; processors and workers get the next ports for
    # their metrics under ``barcode-pipeline run`` (0: none of these servers).
    metrics_port_base: int = Field(default=9100, ge=0, le=65000)

    # --- monitoring (ports are on 127.0.0.1; see docs/monitoring.md) ---
    # The backlog gauges (Kafka lag, streams, pending, DLQ), exported once: by the `run` process,
    # or by `monitor exporter` under systemd.
    exporter_port: int = Field(default=9120, ge=1, le=65535)
    exporter_interval_s: float = Field(default=5.0, gt=0)  # how often the backlog probes run
    # `stack up --monitoring`: Debian's Prometheus and exporters, data under state_dir/prometheus
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    prometheus_scrape_interval_s: float = Field(default=5.0, gt=0)
    prometheus_retention: str = "7d"
    redis_exporter_port: int = Field(default=9121, ge=1, le=65535)
    mysqld_exporter_port: int = Field(default=9104, ge=1, le=65535)
    freshness_slo_s: float = Field(default=10.0, gt=0)  # scanTime to row committed, p99 (alert)

    # --- misc ---
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers


def load_settings(**overrides: object) -> Settings:
    """Read the environment; explicit overrides (from CLI flags) win."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        source = f"--{name.replace('_', '-')}" if name in clean else f"BP_{name.upper()}"
        raise ConfigError(f"{source}: {first['msg']} (got {first.get('input')!r})") from None


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``BP_*`` variables, so child processes see exactly what the parent resolved."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        env[f"BP_{name.upper()}"] = str(value)
    return env
