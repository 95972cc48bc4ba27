"""The settings' sections: one model per concern, each field aliased to its flat ``BP_*`` name.

A role is handed whole sections (``config.ROLE_SECTIONS``); validation that spans sections lives on
``Settings`` (``config/__init__.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticUndefined

from barcode_pipeline import names
from barcode_pipeline.domain.networks import parse_proxies, parse_trusted_networks
from barcode_pipeline.errors import ConfigError


class Section(BaseModel):
    """One group of settings, as the role that reads it sees them (``settings.kafka.bootstrap``).

    Each field's alias is its flat name, the ``BP_*`` variable without its prefix: what a user, a
    systemd unit or a CLI flag sets stays one flat namespace, and a child of ``run`` is handed whole
    sections (:data:`ROLE_SECTIONS`)."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_alias=True, validate_by_name=True)


def _as(flat: str, default: Any = PydanticUndefined, **kwargs: Any) -> Any:
    """A section's field named ``flat`` outside it (its ``BP_*`` variable, its CLI flag)."""
    return Field(default, alias=flat, **kwargs)


class KafkaSettings(Section):
    bootstrap: str = _as("kafka_bootstrap", "127.0.0.1:9092")
    # Secured brokers (docs/security.md); every secret can come from a file: BP_<NAME>_FILE.
    # No SASL_PLAINTEXT: credentials on a connection whose scans and keys go in clear protect little,
    # and with PLAIN they put the password itself on the wire (docs/security.md).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = _as("kafka_security_protocol", "PLAINTEXT")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = _as(
        "kafka_sasl_mechanism", "SCRAM-SHA-512"
    )
    sasl_username: str = _as("kafka_sasl_username", "")
    sasl_password: str = _as("kafka_sasl_password", "")
    ssl_ca_file: Path | None = _as("kafka_ssl_ca_file", None)
    ssl_cert_file: Path | None = _as("kafka_ssl_cert_file", None)  # client certificate (mutual TLS)
    ssl_key_file: Path | None = _as("kafka_ssl_key_file", None)
    # A consumer silent this long is dropped from its group (its partitions go to the others).
    session_timeout_ms: int = _as("kafka_session_timeout_ms", 10_000, ge=6_000, le=1_800_000)
    # librdkafka debug contexts for the services' consumers, e.g. "cgrp,consumer,protocol" (empty: off)
    debug: str = _as("kafka_debug", "")
    # Bounds on every blocking call: network requests (commit, offsets, metadata, close), connects.
    socket_timeout_ms: int = _as("kafka_socket_timeout_ms", 30_000, ge=1_000)
    connect_timeout_ms: int = _as("kafka_connect_timeout_ms", 10_000, ge=1_000)
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # How long, and up to how many bytes per partition, the topic keeps scans: the window for
    # `replay` and the most a processor may fall behind before acknowledged scans are deleted
    # unread (an alert fires at half the time). 32 GiB x 6 partitions hold 7 days of single scans
    # at about 300 scans/s, of batches at 1,000/s; docs/capacity.md has the formula.
    topic_retention_hours: float = Field(default=168.0, gt=0)
    topic_retention_bytes: int = Field(default=32 * 1024**3, ge=-1)  # -1: no bound
    # The ingest's producer.
    produce_timeout_s: float = Field(default=5.0, gt=0)
    linger_ms: float = Field(default=0.0, ge=0)  # no wait: requests in flight batch (below)
    # Produce requests in flight per broker connection (the idempotent producer allows up to 5).
    # One coalesces by itself: idle, a scan is sent at once; under load, what arrives during one
    # round trip goes in the next request, so the broker handles a request per round trip instead
    # of one per scan. Measured with bench vegeta (docs/benchmarks.md): at 3,000 single scans/s the
    # p99 fell from 79-141 ms (5 in flight) to 15-17 ms, with no cost at 100 req/s.
    producer_max_in_flight: int = Field(default=1, ge=1, le=5)


class RedisSettings(Section):
    # rediss://user:password@host:port/0?ssl_ca_certs=CA.pem for a secured server (docs/security.md)
    url: str = _as("redis_url", "redis://127.0.0.1:6380/0")
    # Through Sentinel (empty: connect to the url directly): host:port,host:port,...
    sentinels: str = _as("redis_sentinels", "")
    # Sentinels that require auth (`requirepass` / an ACL user in sentinel.conf); the data nodes'
    # user and password come from the url as without Sentinel.
    sentinel_username: str = _as("redis_sentinel_username", "")
    sentinel_password: str = _as("redis_sentinel_password", "")
    service: str = _as("redis_service", names.REDIS_SERVICE)
    # The processor commits Kafka offsets only once this many replicas hold the batch (WAIT).
    min_replicas: int = _as("redis_min_replicas", 0, ge=0)
    wait_timeout_ms: int = _as("redis_wait_timeout_ms", 2000, ge=1)
    # When the primary changes (Sentinel mode), the processor re-reads what it committed this long
    # before it last saw the old primary (processor/failover.py).
    rewind_window_s: float = _as("redis_rewind_window_s", 10.0, ge=0)
    # Replies and connects; a reply's bound must exceed the longest XREADGROUP BLOCK (the workers' 1 s).
    socket_timeout_s: float = _as("redis_socket_timeout_s", 5.0, gt=1.0)
    connect_timeout_s: float = _as("redis_connect_timeout_s", 5.0, gt=0)


class DbSettings(Section):
    # ?ssl_ca=CA.pem[&ssl_cert=..&ssl_key=..] for a secured server (docs/security.md)
    url: str = _as("db_url", "mysql://barcode:barcode@127.0.0.1:3307/barcode")
    # Connect, and each read or write of a statement (a batch INSERT, a migration step).
    connect_timeout_s: float = _as("db_connect_timeout_s", 5.0, ge=1)
    read_timeout_s: float = _as("db_read_timeout_s", 60.0, ge=1)
    write_timeout_s: float = _as("db_write_timeout_s", 60.0, ge=1)
    # The table's retention (db/partitions.py): partitions by day of scan time, created this many days
    # ahead and dropped once wholly older than the retention, by `run` every interval (0: never).
    retention_days: int = _as("db_retention_days", 90, ge=1)
    partitions_ahead_days: int = _as("db_partitions_ahead_days", 8, ge=2, le=366)
    partition_interval_s: float = _as("db_partition_interval_s", 3600.0, ge=0)


class Accounts(Section):
    """Per-role credentials (least privilege): a service uses its role's value where one is set, else
    the shared one, which stays the admin's (migrations, topics, ops tools). See :func:`for_role`;
    no child of ``run`` is handed this section."""

    ingest_db_url: str = ""  # reads scanner_keys
    worker_db_url: str = ""  # INSERT/SELECT on barcodes
    legacy_db_url: str = ""  # the legacy baseline's table
    processor_redis_url: str = ""
    ingest_redis_url: str = ""  # the rate limits' counters only
    exporter_redis_url: str = ""  # reads stream lengths, pending counts, heartbeats, INFO
    worker_redis_url: str = ""
    ingest_kafka_sasl_username: str = ""
    ingest_kafka_sasl_password: str = ""
    processor_kafka_sasl_username: str = ""
    processor_kafka_sasl_password: str = ""


def _addresses(value: str, parse: Callable[[str], object]) -> str:
    try:
        parse(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return value


class IngestSettings(Section):
    """The HTTP side, ingest's and (for a fair comparison) the legacy baseline's."""

    host: str = _as("ingest_host", "127.0.0.1")
    port: int = _as("ingest_port", 8081)
    processes: int = _as("ingest_processes", 2, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=1000, ge=1)
    scan_max_age_days: float = Field(default=30.0, gt=0)
    scan_max_future_ms: int = Field(default=1000, ge=0)
    # Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For names the client;
    # "" believes no header (uvicorn's default trusted 127.0.0.1: any local client could name itself).
    # A proxy must delete what its clients send and add its own (the ha profile's HAProxy does).
    proxies: str = _as("ingest_proxies", "")
    # Who may read GET /metrics of ingest and legacy (addresses or CIDRs): it names the scanner keys,
    # their volumes and the trusted networks. Prometheus's address goes here when it scrapes remotely.
    metrics_from: str = "127.0.0.0/8,::1"
    # Direct TLS on the ingest port (usually a proxy terminates it): a PEM certificate chain and its key.
    tls_cert: Path | None = _as("ingest_tls_cert", None)
    tls_key: Path | None = _as("ingest_tls_key", None)

    @field_validator("proxies", "metrics_from")
    @classmethod
    def _valid_addresses(cls, value: str) -> str:
        return _addresses(value, parse_proxies)


class AuthSettings(Section):
    """Scanner authentication (auth/): keys from the scanner_keys table, reloaded by every process
    every ``refresh_s``, so a revocation is in force everywhere within that (plus one query)."""

    mode: Literal["required", "off"] = _as("ingest_auth", "required")
    refresh_s: float = _as("ingest_auth_refresh_s", 2.0, gt=0, le=4)
    # While the database cannot be read the last loaded keys stay in force, revoked ones included;
    # past this age keyed requests get 503 (scanners keep their scans and resend). A trade: the
    # longest a revoked key can still be used, against how long a database outage leaves the ingest
    # open; 6 h covers an outage and a night's peak, BarcodeIngestKeysStale pages after 5 min. 0: never.
    keys_max_age_s: float = _as("ingest_keys_max_age_s", 6 * 3600.0, ge=0)
    # Keyless scanners admitted by source address: "CIDR=PATTERN[,PATTERN];..." (domain/networks.py)
    trusted_networks: str = _as("ingest_trusted_networks", "")
    # Scans/s per key (and per trusted network), across every ingest process and host (counted in
    # Redis, auth/ratelimit.py); a key's own rate (`keys create --rate`) overrides it; 0: no limit.
    # 1,000 is the whole pipeline's design peak (docs/capacity.md): one key past it is a stolen key
    # or a backlog being resent, and pacing it (429 + Retry-After) keeps the others' scans moving.
    key_rate: float = _as("ingest_key_rate", 1000.0, ge=0)
    # The window the rate is averaged over: a quiet key may send rate x window scans at once.
    key_window_s: float = _as("ingest_key_window_s", 1.0, gt=0, le=60)

    @field_validator("trusted_networks")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        return _addresses(value, parse_trusted_networks)


class DedupSettings(Section):
    """What counts as the same scan: the processor's markers and the workers' rows agree on it."""

    policy: Literal["event", "barcode"] = _as("dedup_policy", "event")
    # Duplicate markers (processor/markers.py) live from the scan's minute for this window: a resend
    # or redelivery within it stops in Redis; an older one reaches the database, whose UNIQUE key
    # absorbs it. 24 h covers a scanner that resends after a night offline and any Kafka redelivery;
    # at 1,000 scans/s it holds 86 M markers, about 1.7 GiB (docs/capacity.md, measured).
    window_s: int = _as("dedup_window_s", 24 * 3600, ge=60)
    # Hashes per minute of scan time: keep peak scans/s x 60 / buckets under Redis's
    # hash-max-listpack-entries (128 by default; the local stack sets 512) so hashes stay compact.
    buckets: int = _as("dedup_buckets", 1024, ge=1, le=1_000_000)
    # Also honour one-key-per-scan markers of earlier releases: "auto" looks for them at start-up.
    legacy_markers: Literal["auto", "on", "off"] = _as("dedup_legacy_markers", "auto")


class ProcessorSettings(Section):
    group: str = _as("processor_group", names.PROCESSOR_GROUP)  # another: an independent pipeline
    count: int = _as("processors", 1, ge=1)  # processes in the consumer group (<= topic partitions)
    batch: int = _as("processor_batch", 500, ge=1)
    # consume() waits this long for a full batch: at ~1,000 scans/s it is a floor on freshness
    poll_timeout_s: float = _as("processor_poll_timeout_s", 0.02, gt=0)
    # The broker holds the processor's fetch until this many bytes or this long: one fetch per
    # record at ~2,000 scans/s would cost the broker as much CPU as the produce requests themselves.
    fetch_min_bytes: int = _as("processor_fetch_min_bytes", 16_384, ge=1)
    fetch_wait_ms: int = _as("processor_fetch_wait_ms", 20, ge=0)


class StreamSettings(Section):
    """The Redis Streams between the processor and the workers, and their dead letters."""

    shards: int = _as("stream_shards", 4, ge=1)
    claim_min_idle_ms: int = Field(default=60_000, ge=0)
    max_deliveries: int = Field(default=5, ge=1)
    # The DLQ stream's bound (about 260 B an entry: 1 M is ~260 MB of Redis). At the limit workers
    # keep further dead letters pending instead of dropping them; an alert fires at half of it.
    dlq_max_entries: int = Field(default=1_000_000, ge=1)
    # Workers delete acknowledged entries older than the retention this often (0: never; the
    # streams then grow forever). Kafka keeps the long-term log; see worker/retention.py.
    trim_interval_s: float = _as("stream_trim_interval_s", 10.0, ge=0)
    retention_s: float = _as("stream_retention_s", 300.0, ge=0)


class WorkerSettings(Section):
    count: int = _as("workers", 2, ge=1)
    batch_size: int = _as("worker_batch_size", 500, ge=1)
    max_delay_ms: int = _as("worker_max_delay_ms", 200, ge=0)
    # Write a batch early once it holds this many scans and this long has passed since the last
    # write (worker/batcher.py): ~1,000 scans/s then commit every ~0.1 s instead of every 0.2 s,
    # still over 100 scans per commit. 0 turns early writes off.
    early_batch: int = _as("worker_early_batch", 120, ge=0)
    min_commit_interval_ms: int = _as("worker_min_commit_interval_ms", 100, ge=0)
    heartbeat_ttl_s: float = _as("worker_heartbeat_ttl_s", 5.0, gt=0)
    # Extra workers read only when entries wait undelivered (fewer commits at low load); see worker/service.py
    standby: bool = _as("worker_standby", True)
    # ... for this long, or a full batch of them: the primary worker has fallen behind.
    standby_join_ms: int = _as("worker_standby_join_ms", 250, ge=0)


class LegacySettings(Section):
    """The synchronous baseline the pipeline replaces (legacy/)."""

    host: str = _as("legacy_host", "127.0.0.1")
    port: int = _as("legacy_port", 8080)
    pool_size: int = _as("legacy_pool_size", 10, ge=1)
    threads: int = _as("legacy_threads", 40, ge=1)


class MonitoringSettings(Section):
    """The liveness watchdog (run/watchdog.py), the metrics ports and the monitoring stack's (ports are
    on 127.0.0.1; see docs/monitoring.md)."""

    # A processor or worker whose stage has work waiting and that moved none for this long is
    # restarted, after its thread stacks are dumped to the log (0: watchdog off).
    stall_timeout_s: float = Field(default=30.0, ge=0)
    # The supervisor's /health and /metrics port; processors and workers get the next ports for
    # their metrics under ``barcode-pipeline run`` (0: none of these servers).
    metrics_port_base: int = Field(default=9100, ge=0, le=65000)
    # The backlog gauges (Kafka lag, streams, pending, DLQ), exported once: by the `run` process,
    # or by `monitor exporter` under systemd.
    exporter_port: int = Field(default=9120, ge=1, le=65535)
    exporter_interval_s: float = Field(default=5.0, gt=0)  # how often the backlog probes run
    # `stack up --monitoring`: Debian's Prometheus and exporters, data under state_dir/prometheus
    prometheus_port: int = Field(default=9090, ge=1, le=65535)
    prometheus_scrape_interval_s: float = Field(default=5.0, gt=0)
    redis_exporter_port: int = Field(default=9121, ge=1, le=65535)
    mysqld_exporter_port: int = Field(default=9104, ge=1, le=65535)
    node_exporter_port: int = Field(default=9129, ge=1, le=65535)  # free space of the data directories
    freshness_slo_s: float = Field(default=10.0, gt=0)  # scanTime to row committed, p99 (alert)
