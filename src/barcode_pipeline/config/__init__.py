"""Typed, frozen settings read from the environment (prefix ``BP_``).

Only entrypoints (the CLI) call :func:`load_settings`; everything below receives a
``Settings`` object explicitly, so tests can build one with overrides and nothing
reads the environment behind their back.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, cast

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from barcode_pipeline import names
from barcode_pipeline.config.sections import (
    Accounts,
    AuthSettings,
    DbSettings,
    DedupSettings,
    IngestSettings,
    KafkaSettings,
    LegacySettings,
    MonitoringSettings,
    ProcessorSettings,
    RedisSettings,
    Section,
    StreamSettings,
    WorkerSettings,
)
from barcode_pipeline.domain.networks import parse_proxies, parse_trusted_networks
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import MASK, add_secret

log = logging.getLogger(__name__)


class _FlatEnv(PydanticBaseSettingsSource):
    """``BP_<flat name>`` for every setting, sections' included (case-insensitive, as pydantic's own)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every name at once

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("BP_")}
        return {
            name: environ[var]
            for name in flat_names(cast("type[Settings]", self.settings_cls))
            if (var := f"BP_{name.upper()}") in environ
        }


class Settings(BaseSettings):
    """Every knob of the pipeline, in one section per concern. Defaults point at the local stack
    (``barcode-pipeline stack up``). Built from flat names (``Settings(kafka_bootstrap=...)``, the
    environment's ``BP_*``), read by section (``settings.kafka.bootstrap``)."""

    model_config = SettingsConfigDict(env_prefix="BP_", frozen=True, extra="ignore")

    # --- connections (a user with their own servers only sets kafka_bootstrap, redis_url, db_url) ---
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    db: DbSettings = Field(default_factory=DbSettings)
    accounts: Accounts = Field(default_factory=Accounts)
    # --- the services ---
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    streams: StreamSettings = Field(default_factory=StreamSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    legacy: LegacySettings = Field(default_factory=LegacySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    # --- every role: state (progress files, the node lease's fallback, a local stack's servers; the
    # harness's own knobs for those servers are in barcode_harness/settings.py), the app host, logs ---
    state_dir: Path = Path(".stack")
    # Prefix of the processors' static member ids and the workers' consumer names; one `run` per name
    # (several `run`s share one cluster; see run/lease.py).
    node_name: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}$")
    node_lease_ttl_s: float = Field(default=10.0, ge=2)  # a crashed node's name is free again after this
    time_zone: str = "Asia/Seoul"  # of the scanners' local times (the processor's and legacy's rows)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _FlatEnv(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _into_sections(cls, data: Any) -> Any:
        """Flat names (keyword arguments, the environment) go to their sections."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, names_in in section_names(cls).items():
            own = {k: data.pop(k) for k in names_in if k in data}
            if own:
                given = data.get(name) or {}
                base = given.model_dump(by_alias=True) if isinstance(given, Section) else dict(given)
                data[name] = {**base, **own}
        return data

    def updated(self, changes: Mapping[str, object]) -> Self:
        """A copy with some settings changed, by flat name, validated again (an unknown name raises)."""
        unknown = set(changes) - set(flat_names(type(self)))
        if unknown:
            raise KeyError(f"no such setting: {', '.join(sorted(unknown))}")
        return type(self).model_validate({**flat(self), **changes})

    @model_validator(mode="after")
    def _retention_keeps_what_ingest_accepts(self) -> Settings:
        if self.db.retention_days <= self.ingest.scan_max_age_days:
            raise ValueError(
                f"BP_DB_RETENTION_DAYS ({self.db.retention_days}) must exceed BP_SCAN_MAX_AGE_DAYS "
                f"({self.ingest.scan_max_age_days:g}): ingest accepts scans that old, and their partition "
                "would already be gone"
            )
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.ingest.tls_cert is None) != (self.ingest.tls_key is None):
            raise ValueError("BP_INGEST_TLS_CERT and BP_INGEST_TLS_KEY go together: set both or neither")
        for path in (self.ingest.tls_cert, self.ingest.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self

    @model_validator(mode="after")
    def _no_proxy_in_a_trusted_network(self) -> Settings:
        """Behind a proxy every request comes from it: a trusted network holding it would admit all."""
        for proxy in parse_proxies(self.ingest.proxies):
            for trusted in parse_trusted_networks(self.auth.trusted_networks):
                if proxy.version == trusted.network.version and proxy.overlaps(trusted.network):
                    raise ValueError(
                        f"BP_INGEST_TRUSTED_NETWORKS: {trusted.network} holds the proxy {proxy} "
                        "(BP_INGEST_PROXIES): every client behind it would be admitted without a key"
                    )
        return self


@functools.cache
def section_names(cls: type[Settings]) -> dict[str, tuple[str, ...]]:
    """{section: its settings' flat names}."""
    return {
        name: tuple(f.alias or n for n, f in field.annotation.model_fields.items())
        for name, field in cls.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section)
    }


@functools.cache
def flat_names(cls: type[Settings]) -> tuple[str, ...]:
    """Every setting's flat name: the top level's and each section's."""
    sections = section_names(cls)
    top = tuple(n for n in cls.model_fields if n not in sections)
    return top + tuple(itertools.chain.from_iterable(sections.values()))


def flat(settings: Settings, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
    """``{flat name: value}`` of every setting: what :class:`Settings` is built from."""
    out: dict[str, Any] = {}
    for name, value in settings.model_dump(mode=mode, by_alias=True).items():
        if isinstance(value, dict):  # a section (no setting is a mapping)
            out.update(value)
        else:
            out[name] = value
    return out


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


def for_role(settings: AnySettings, role: names.Role | Exporter) -> AnySettings:
    """``settings`` as the service ``role`` uses them: its own credentials where they are set.

    Called once at a service's entrypoint, so everything below it (and any child it spawns) holds
    only that role's secrets for the connections it opens."""
    update = {
        shared: getattr(settings.accounts, own)
        for shared, own in ROLE_SETTINGS[role].items()
        if getattr(settings.accounts, own)
    }
    return settings.updated(update) if update else settings


def _secured(settings: Settings) -> bool:
    """A deployment that set up TLS or SASL wants least privilege too: that is when a role falling
    back to the admin's credentials is worth a warning (a plaintext development stack is not)."""
    return settings.kafka.security_protocol != "PLAINTEXT" or settings.redis.url.startswith("rediss://")


# The sections each service role reads, and so what a child of ``run`` of that role is started with
# (besides the top level every role reads: state dir, node, time zone, logs): its own credentials
# under the shared names (see for_role) and nothing else, no other role's secret, no section it never
# reads. tests/run/test_role_env.py finds every setting each role's code reads (from its imports)
# and fails when its section is missing here: a child would silently run on that setting's default.
ROLE_SECTIONS: dict[names.Role, tuple[str, ...]] = {
    names.Role.INGEST: ("kafka", "redis", "db", "ingest", "auth"),
    names.Role.PROCESSOR: ("kafka", "redis", "dedup", "processor", "streams"),
    names.Role.WORKER: ("redis", "db", "dedup", "streams", "worker"),
    names.Role.LEGACY: ("db", "ingest", "legacy"),
}


def role_env(settings: Settings, role: names.Role) -> dict[str, str]:
    """The ``BP_*`` variables a service of ``role`` is started with: the sections it reads, its own
    credentials under the shared names, and no other secret, neither another role's nor the admin's
    (a compromised ingest must not hold the workers' database account or Kafka's super user).
    Roles without a list (none that ``run`` starts): everything."""
    sections = ROLE_SECTIONS.get(role)
    if sections is None:
        return settings_env(settings)
    missing = [own for own in ROLE_SETTINGS[role].values() if not getattr(settings.accounts, own)]
    if missing and _secured(settings):  # (a child gets them under the shared names: it cannot tell)
        wanted = ", ".join(f"BP_{own.upper()}" for own in missing)
        log.warning("%s runs on the shared (admin) credentials: set %s for least privilege", role, wanted)
    reads = role_reads(role)
    return {k: v for k, v in settings_env(for_role(settings, role)).items() if k[3:].lower() in reads}


@functools.cache
def role_reads(role: names.Role) -> frozenset[str]:
    """The flat names of the settings a child of ``role`` is given: the top level and its sections."""
    by_section = section_names(Settings)
    top = (n for n in Settings.model_fields if n not in by_section)
    return frozenset(itertools.chain(top, *(by_section[s] for s in ROLE_SECTIONS[role])))


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
        name = str(first["loc"][-1])  # a section's field: (section, flat name)
        source = f"--{name.replace('_', '-')}" if name in clean else f"BP_{name.upper()}"
        shown = MASK if name in secret_files else repr(first.get("input"))
        raise ConfigError(f"{source}: {first['msg']} (got {shown})") from None
    accounts = settings.accounts
    for secret in (settings.kafka.sasl_password, accounts.ingest_kafka_sasl_password,
                   accounts.processor_kafka_sasl_password, settings.redis.sentinel_password):  # fmt: skip
        add_secret(secret)  # URLs and scanner keys are masked by their shape
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``BP_*`` variables, so child processes see exactly what the parent resolved."""
    env: dict[str, str] = {}
    for name, value in flat(settings).items():
        if value is not None:  # unset optional settings stay unset (not the string "None")
            env[f"BP_{name.upper()}"] = str(value)
    return env
