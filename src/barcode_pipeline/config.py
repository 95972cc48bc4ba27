"""Typed, frozen settings read from the environment (prefix ``BP_``).

Only entrypoints (the CLI) call :func:`load_settings`; everything below receives a
``Settings`` object explicitly, so tests can build one with overrides and nothing
reads the environment behind their back.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from barcode_pipeline import names
from barcode_pipeline.domain.networks import parse_proxies, parse_trusted_networks
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import MASK, add_secret

log = logging.getLogger(__name__)


class Settings(BaseSettings):
    """Every knob of the pipeline. Defaults point at the local stack (``barcode-pipeline stack up``)."""

    model_config = SettingsConfigDict(env_prefix="BP_", frozen=True, extra="ignore")

    # --- connections (a user with their own servers only sets these three) ---
    kafka_bootstrap: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6380/0"
    db_url: str = "mysql://barcode:barcode@127.0.0.1:3307/barcode"
    # Secured servers (docs/security.md). Redis: rediss://user:password@host:port/0?ssl_ca_certs=CA.pem
    # in BP_REDIS_URL. MariaDB/MySQL: ?ssl_ca=CA.pem[&ssl_cert=..&ssl_key=..] in BP_DB_URL. Every
    # secret can come from a file instead: BP_<NAME>_FILE (see SECRET_FILE_SETTINGS).
    # No SASL_PLAINTEXT: credentials on a connection whose scans and keys go in clear protect little,
    # and with PLAIN they put the password itself on the wire (docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None  # client certificate (mutual TLS), with its key
    kafka_ssl_key_file: Path | None = None
    # Per-role credentials (least privilege): a service uses its role's value where one is set, else
    # the shared one above, which stays the admin's (migrations, topics, ops tools). See for_role().
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

    # --- state: progress files, the node lease's fallback, a local stack's servers (the harness's
    # own knobs for those servers are in barcode_harness/settings.py) ---
    state_dir: Path = Path(".stack")

    # --- Redis through Sentinel (empty: connect to redis_url directly) ---
    redis_sentinels: str = ""  # host:port,host:port,...
    # Sentinels that require auth (`requirepass` / an ACL user in sentinel.conf); the data nodes'
    # user and password come from BP_REDIS_URL as without Sentinel.
    redis_sentinel_username: str = ""
    redis_sentinel_password: str = ""
    redis_service: str = names.REDIS_SERVICE
    # The processor commits Kafka offsets only once this many replicas hold the batch (WAIT).
    redis_min_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=2000, ge=1)
    # When the primary changes (Sentinel mode), the processor re-reads what it committed this long
    # before it last saw the old primary (processor/failover.py).
    redis_rewind_window_s: float = Field(default=10.0, ge=0)

    # --- app host (several `run`s share one cluster; see run/lease.py) ---
    # Prefix of the processors' static member ids and the workers' consumer names; one `run` per name.
    node_name: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")
    node_lease_ttl_s: float = Field(default=10.0, ge=2)  # a crashed node's name is free again after this

    # --- topic ---
    # A consumer silent this long is dropped from its group (its partitions go to the others).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=6_000, le=1_800_000)
    # librdkafka debug contexts for the services' consumers, e.g. "cgrp,consumer,protocol" (empty: off)
    kafka_debug: str = ""
    topic_partitions: int = Field(default=6, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # How long, and up to how many bytes per partition, the topic keeps scans: the window for
    # `replay` and the most a processor may fall behind before acknowledged scans are deleted
    # unread (an alert fires at half the time). 32 GiB x 6 partitions hold 7 days of single scans
    # at about 300 scans/s, of batches at 1,000/s; docs/capacity.md has the formula.
    topic_retention_hours: float = Field(default=168.0, gt=0)
    topic_retention_bytes: int = Field(default=32 * 1024**3, ge=-1)  # -1: no bound

    # --- ingest service ---
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8081
    ingest_processes: int = Field(default=2, ge=1)
    produce_timeout_s: float = Field(default=5.0, gt=0)
    linger_ms: float = Field(default=0.0, ge=0)  # no wait: requests in flight batch (below)
    # Produce requests in flight per broker connection (the idempotent producer allows up to 5).
    # One coalesces by itself: idle, a scan is sent at once; under load, what arrives during one
    # round trip goes in the next request, so the broker handles a request per round trip instead
    # of one per scan. Measured with bench vegeta (docs/benchmarks.md): at 3,000 single scans/s the
    # p99 fell from 79-141 ms (5 in flight) to 15-17 ms, with no cost at 100 req/s.
    producer_max_in_flight: int = Field(default=1, ge=1, le=5)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_items: int = Field(default=1000, ge=1)
    scan_max_age_days: float = Field(default=30.0, gt=0)
    scan_max_future_ms: int = Field(default=1000, ge=0)
    # Scanner authentication (auth/): keys from the scanner_keys table, reloaded by every process this
    # often, so a revocation is in force everywhere within that (plus one query) - at most 5 s.
    ingest_auth: Literal["required", "off"] = "required"
    ingest_auth_refresh_s: float = Field(default=2.0, gt=0, le=4)
    # While the database cannot be read the last loaded keys stay in force, revoked ones included;
    # past this age keyed requests get 503 (scanners keep their scans and resend). A trade: the
    # longest a revoked key can still be used, against how long a database outage leaves the ingest
    # open; 6 h covers an outage and a night's peak, BarcodeIngestKeysStale pages after 5 min. 0: never.
    ingest_keys_max_age_s: float = Field(default=6 * 3600.0, ge=0)
    # Keyless scanners admitted by source address: "CIDR=PATTERN[,PATTERN];..." (domain/networks.py)
    ingest_trusted_networks: str = ""
    # Reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For names the client;
    # "" believes no header (uvicorn's default trusted 127.0.0.1: any local client could name itself).
    # A proxy must delete what its clients send and add its own (the ha profile's HAProxy does).
    ingest_proxies: str = ""
    # Who may read GET /metrics of ingest and legacy (addresses or CIDRs): it names the scanner keys,
    # their volumes and the trusted networks. Prometheus's address goes here when it scrapes remotely.
    metrics_from: str = "127.0.0.0/8,::1"
    # Scans/s per key (and per trusted network), across every ingest process and host (counted in
    # Redis, auth/ratelimit.py); a key's own rate (`keys create --rate`) overrides it; 0: no limit.
    # 1,000 is the whole pipeline's design peak (docs/capacity.md): one key past it is a stolen key
    # or a backlog being resent, and pacing it (429 + Retry-After) keeps the others' scans moving.
    ingest_key_rate: float = Field(default=1000.0, ge=0)
    # The window the rate is averaged over: a quiet key may send rate x window scans at once.
    ingest_key_window_s: float = Field(default=1.0, gt=0, le=60)
    # Direct TLS on the ingest port (usually a proxy terminates it): a PEM certificate chain and its key.
    ingest_tls_cert: Path | None = None
    ingest_tls_key: Path | None = None

    # --- processor ---
    dedup_policy: Literal["event", "barcode"] = "event"
    # Duplicate markers (processor/markers.py) live from the scan's minute for this window: a resend
    # or redelivery within it stops in Redis; an older one reaches the database, whose UNIQUE key
    # absorbs it. 24 h covers a scanner that resends after a night offline and any Kafka redelivery;
    # at 1,000 scans/s it holds 86 M markers, about 1.7 GiB (docs/capacity.md, measured).
    dedup_window_s: int = Field(default=24 * 3600, ge=60)
    # Hashes per minute of scan time: keep peak scans/s x 60 / dedup_buckets under Redis's
    # hash-max-listpack-entries (128 by default; the local stack sets 512) so hashes stay compact.
    dedup_buckets: int = Field(default=1024, ge=1, le=1_000_000)
    # Also honour one-key-per-scan markers of earlier releases: "auto" looks for them at start-up.
    dedup_legacy_markers: Literal["auto", "on", "off"] = "auto"
    stream_shards: int = Field(default=4, ge=1)
    time_zone: str = "Asia/Seoul"
    processor_group: str = names.PROCESSOR_GROUP  # another group = an independent pipeline on one topic
    processors: int = Field(default=1, ge=1)  # processes in the consumer group (<= topic partitions)
    processor_batch: int = Field(default=500, ge=1)
    # consume() waits this long for a full batch: at ~1,000 scans/s it is a floor on freshness
    processor_poll_timeout_s: float = Field(default=0.02, gt=0)
    # The broker holds the processor's fetch until this many bytes or this long: one fetch per
    # record at ~2,000 scans/s would cost the broker as much CPU as the produce requests themselves.
    processor_fetch_min_bytes: int = Field(default=16_384, ge=1)
    processor_fetch_wait_ms: int = Field(default=20, ge=0)

    # --- persistence workers ---
    worker_batch_size: int = Field(default=500, ge=1)
    worker_max_delay_ms: int = Field(default=200, ge=0)
    # Write a batch early once it holds this many scans and this long has passed since the last
    # write (worker/batcher.py): ~1,000 scans/s then commit every ~0.1 s instead of every 0.2 s,
    # still over 100 scans per commit. 0 turns early writes off.
    worker_early_batch: int = Field(default=120, ge=0)
    worker_min_commit_interval_ms: int = Field(default=100, ge=0)
    worker_heartbeat_ttl_s: float = Field(default=5.0, gt=0)
    claim_min_idle_ms: int = Field(default=60_000, ge=0)
    max_deliveries: int = Field(default=5, ge=1)
    # The DLQ stream's bound (about 260 B an entry: 1 M is ~260 MB of Redis). At the limit workers
    # keep further dead letters pending instead of dropping them; an alert fires at half of it.
    dlq_max_entries: int = Field(default=1_000_000, ge=1)
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

    # --- the table's retention (db/partitions.py): partitions by day of scan time, created this many
    # days ahead and dropped once wholly older than the retention, by `run` every interval (0: never)
    db_retention_days: int = Field(default=90, ge=1)
    db_partitions_ahead_days: int = Field(default=8, ge=2, le=366)
    db_partition_interval_s: float = Field(default=3600.0, ge=0)

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
    redis_exporter_port: int = Field(default=9121, ge=1, le=65535)
    mysqld_exporter_port: int = Field(default=9104, ge=1, le=65535)
    node_exporter_port: int = Field(default=9129, ge=1, le=65535)  # free space of the data directories
    freshness_slo_s: float = Field(default=10.0, gt=0)  # scanTime to row committed, p99 (alert)

    @model_validator(mode="after")
    def _retention_keeps_what_ingest_accepts(self) -> Settings:
        if self.db_retention_days <= self.scan_max_age_days:
            raise ValueError(
                f"BP_DB_RETENTION_DAYS ({self.db_retention_days}) must exceed BP_SCAN_MAX_AGE_DAYS "
                f"({self.scan_max_age_days:g}): ingest accepts scans that old, and their partition would "
                "already be gone"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.ingest_tls_cert is None) != (self.ingest_tls_key is None):
            raise ValueError("BP_INGEST_TLS_CERT and BP_INGEST_TLS_KEY go together: set both or neither")
        for path in (self.ingest_tls_cert, self.ingest_tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @field_validator("ingest_trusted_networks", "ingest_proxies", "metrics_from")
    @classmethod
    def _valid_addresses(cls, value: str, info: ValidationInfo) -> str:
        """Trusted networks (with device patterns), proxies and scrapers (addresses or CIDRs)."""
        parse = parse_trusted_networks if info.field_name == "ingest_trusted_networks" else parse_proxies
        try:
            parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _no_proxy_in_a_trusted_network(self) -> Settings:
        """Behind a proxy every request comes from it: a trusted network holding it would admit all."""
        for proxy in parse_proxies(self.ingest_proxies):
            for trusted in parse_trusted_networks(self.ingest_trusted_networks):
                if proxy.version == trusted.network.version and proxy.overlaps(trusted.network):
                    raise ValueError(
                        f"BP_INGEST_TRUSTED_NETWORKS: {trusted.network} holds the proxy {proxy} "
                        "(BP_INGEST_PROXIES): every client behind it would be admitted without a key"
                    )
        return self

    # --- misc ---
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers


AnySettings = TypeVar("AnySettings", bound=Settings)

# Settings that hold a secret (or a URL with one): each may also be read from the file BP_<NAME>_FILE
# names, as container and systemd secrets are mounted. The variable itself wins when both are set.
SECRET_FILE_SETTINGS = (
    "db_url", "redis_url", "kafka_sasl_password",
    "ingest_db_url", "worker_db_url", "legacy_db_url", "processor_redis_url", "worker_redis_url",
    "ingest_redis_url", "exporter_redis_url",
    "ingest_kafka_sasl_password", "processor_kafka_sasl_password", "redis_sentinel_password",
)  # fmt: skip

# What each service role replaces with its own credentials: {role: {shared setting: role's setting}}.
# The backlog exporter is no child of ``run`` (it runs inside ``run``, or as a unit of its own) but
# connects with an account of its own.
Exporter = Literal["exporter"]
ROLE_SETTINGS: dict[names.Role | Exporter, dict[str, str]] = {
    names.Role.INGEST: {
        "db_url": "ingest_db_url",
        "redis_url": "ingest_redis_url",
        "kafka_sasl_username": "ingest_kafka_sasl_username",
        "kafka_sasl_password": "ingest_kafka_sasl_password",
    },
    names.Role.PROCESSOR: {
        "redis_url": "processor_redis_url",
        "kafka_sasl_username": "processor_kafka_sasl_username",
        "kafka_sasl_password": "processor_kafka_sasl_password",
    },
    names.Role.WORKER: {"db_url": "worker_db_url", "redis_url": "worker_redis_url"},
    names.Role.LEGACY: {"db_url": "legacy_db_url"},
    "exporter": {"redis_url": "exporter_redis_url"},
}


def for_role(settings: Settings, role: names.Role | Exporter) -> Settings:
    """``settings`` as the service ``role`` uses them: its own credentials where they are set.

    Called once at a service's entrypoint, so everything below it (and any child it spawns) holds
    only that role's secrets for the connections it opens."""
    update = {
        shared: getattr(settings, own)
        for shared, own in ROLE_SETTINGS[role].items()
        if getattr(settings, own)
    }
    return settings.model_copy(update=update) if update else settings


def _secured(settings: Settings) -> bool:
    """A deployment that set up TLS or SASL wants least privilege too: that is when a role falling
    back to the admin's credentials is worth a warning (a plaintext development stack is not)."""
    return settings.kafka_security_protocol != "PLAINTEXT" or settings.redis_url.startswith("rediss://")


# What each service role reads, and so what a child of ``run`` of that role is started with: its own
# credentials (under the shared names, see for_role) and nothing else, no other role's secret, no
# knob it never reads. tests/run/test_role_env.py finds every setting each role's code reads (from its
# imports) and fails when one is missing here: a child would silently run on that setting's default.
_LOGS = ("log_level", "log_format")
_KAFKA = (
    "kafka_bootstrap", "kafka_connect_timeout_ms", "kafka_debug", "kafka_sasl_mechanism",
    "kafka_sasl_password", "kafka_sasl_username", "kafka_security_protocol", "kafka_session_timeout_ms",
    "kafka_socket_timeout_ms", "kafka_ssl_ca_file", "kafka_ssl_cert_file", "kafka_ssl_key_file",
    "linger_ms", "produce_timeout_s", "producer_max_in_flight",
    "topic_partitions", "topic_replication", "topic_retention_bytes", "topic_retention_hours",
)  # fmt: skip
_REDIS = (
    "redis_url", "redis_connect_timeout_s", "redis_socket_timeout_s", "redis_sentinels", "redis_service",
    "redis_sentinel_username", "redis_sentinel_password",
)  # fmt: skip
_DB = ("db_url", "db_connect_timeout_s", "db_read_timeout_s", "db_write_timeout_s")
_HTTP = ("max_body_bytes", "max_batch_items", "metrics_from", "scan_max_age_days", "scan_max_future_ms")
ROLE_READS: dict[names.Role, frozenset[str]] = {
    names.Role.INGEST: frozenset((*_LOGS, *_KAFKA, *_REDIS, *_DB, *_HTTP,
        "ingest_auth", "ingest_auth_refresh_s", "ingest_host", "ingest_port", "ingest_processes",
        "ingest_key_rate", "ingest_key_window_s", "ingest_keys_max_age_s", "ingest_proxies",
        "ingest_tls_cert", "ingest_tls_key", "ingest_trusted_networks")),
    names.Role.PROCESSOR: frozenset((*_LOGS, *_KAFKA, *_REDIS,
        "dedup_buckets", "dedup_legacy_markers", "dedup_policy", "dedup_window_s", "processor_batch",
        "processor_fetch_min_bytes", "processor_fetch_wait_ms", "processor_group", "processor_poll_timeout_s",
        "redis_min_replicas", "redis_rewind_window_s", "redis_wait_timeout_ms", "stream_shards",
        "time_zone")),
    names.Role.WORKER: frozenset((*_LOGS, *_REDIS, *_DB,
        "claim_min_idle_ms", "dedup_policy", "dlq_max_entries", "max_deliveries", "stream_retention_s",
        "stream_shards", "stream_trim_interval_s", "worker_batch_size", "worker_early_batch",
        "worker_heartbeat_ttl_s", "worker_max_delay_ms", "worker_min_commit_interval_ms", "worker_standby",
        "worker_standby_join_ms")),
    names.Role.LEGACY: frozenset((*_LOGS, *_DB, *_HTTP,
        "ingest_processes", "legacy_host", "legacy_port", "legacy_pool_size", "legacy_threads", "time_zone")),
}  # fmt: skip


def role_env(settings: Settings, role: names.Role) -> dict[str, str]:
    """The ``BP_*`` variables a service of ``role`` is started with: the settings it reads, its own
    credentials under the shared names, and no other secret, neither another role's nor the admin's
    (a compromised ingest must not hold the workers' database account or Kafka's super user).
    Roles without a list (none that ``run`` starts): everything."""
    reads = ROLE_READS.get(role)
    if reads is None:
        return settings_env(settings)
    missing = [own for own in ROLE_SETTINGS[role].values() if not getattr(settings, own)]
    if missing and _secured(settings):  # (a child gets them under the shared names: it cannot tell)
        wanted = ", ".join(f"BP_{own.upper()}" for own in missing)
        log.warning("%s runs on the shared (admin) credentials: set %s for least privilege", role, wanted)
    wanted_vars = {f"BP_{name.upper()}" for name in reads}
    return {k: v for k, v in settings_env(for_role(settings, role)).items() if k in wanted_vars}


def secrets_from_files(
    environ: Mapping[str, str], names: Iterable[str] = SECRET_FILE_SETTINGS
) -> dict[str, str]:
    """``{setting: file content}`` for every ``BP_<NAME>_FILE`` given (trailing newline stripped)."""
    found: dict[str, str] = {}
    for name in names:
        var = f"BP_{name.upper()}"
        path = environ.get(f"{var}_FILE")
        if not path or var in environ:
            continue
        try:
            found[name] = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{var}_FILE: cannot read {path}: {exc.strerror}") from None
    return found


# Settings that changed meaning or were replaced: set, they are refused rather than ignored.
RETIRED = {
    "BP_INGEST_KEY_BURST": "the rate limit counts scans across every process now: set BP_INGEST_KEY_RATE "
    "(scans/s) and BP_INGEST_KEY_WINDOW_S instead (docs/security.md)",
}


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and ``BP_*_FILE`` secrets); explicit overrides (from CLI flags) win."""
    return load_settings_as(Settings, overrides)


def load_settings_as(
    cls: type[AnySettings],
    overrides: Mapping[str, object],
    secret_files: Iterable[str] = SECRET_FILE_SETTINGS,
) -> AnySettings:
    """:func:`load_settings` for a class that adds settings of its own (the harness's), with the
    secrets it may read from files."""
    secret_files = tuple(secret_files)
    for name, instead in RETIRED.items():
        if name in os.environ:
            raise ConfigError(f"{name} is no longer read: {instead}")
    given = {k: v for k, v in overrides.items() if v is not None}
    clean = {**secrets_from_files(os.environ, secret_files), **given}
    try:
        settings = cls(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings: its message names them (never echo the input)
            raise ConfigError(str(first["msg"]).removeprefix("Value error, ")) from None
        name = str(first["loc"][0]) if first["loc"] else "?"
        source = f"--{name.replace('_', '-')}" if name in clean else f"BP_{name.upper()}"
        shown = MASK if name in secret_files else repr(first.get("input"))
        raise ConfigError(f"{source}: {first['msg']} (got {shown})") from None
    for secret in (settings.kafka_sasl_password, settings.ingest_kafka_sasl_password,
                   settings.processor_kafka_sasl_password, settings.redis_sentinel_password):  # fmt: skip
        add_secret(secret)  # URLs and scanner keys are masked by their shape
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``BP_*`` variables, so child processes see exactly what the parent resolved."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is not None:  # unset optional settings stay unset (not the string "None")
            env[f"BP_{name.upper()}"] = str(value)
    return env
