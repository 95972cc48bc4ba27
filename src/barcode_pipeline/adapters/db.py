"""Database connections (PyMySQL) from ``BP_DB_URL`` (``mysql://user:pass@host:port/db``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError

_EPOCH = datetime(1970, 1, 1)


def db_time(epoch_ms: int) -> datetime:
    """Epoch ms as the naive UTC datetime a DATETIME(3) column stores (sessions run in UTC)."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)


@dataclass(frozen=True, slots=True)
class DbTarget:
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None


def parse_db_url(url: str) -> DbTarget:
    """Accept ``mysql://``, ``mysql+pymysql://`` and ``mariadb://`` URLs; ``?unix_socket=`` is honoured."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise ConfigError(f"BP_DB_URL must start with mysql:// or mariadb://, got {parts.scheme!r}")
    database = parts.path.lstrip("/")
    if not database:
        raise ConfigError("BP_DB_URL must name a database, e.g. mysql://user:pass@127.0.0.1:3307/barcode")
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    return DbTarget(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=query.get("unix_socket"),
    )


# Bounds on a statement's reads and writes when the caller gives none: a hung server then surfaces
# as an error instead of a call that waits forever (PyMySQL's own default is no bound at all).
DEFAULT_IO_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class DbTimeouts:
    """Connect, read and write bounds of a connection (seconds; PyMySQL takes whole seconds)."""

    connect_s: float = 5.0
    read_s: float = DEFAULT_IO_TIMEOUT_S
    write_s: float = DEFAULT_IO_TIMEOUT_S

    @classmethod
    def of(cls, settings: Settings) -> DbTimeouts:
        """From ``BP_DB_CONNECT_TIMEOUT_S``, ``BP_DB_READ_TIMEOUT_S`` and ``BP_DB_WRITE_TIMEOUT_S``."""
        return cls(settings.db_connect_timeout_s, settings.db_read_timeout_s, settings.db_write_timeout_s)


def connect(
    url: str,
    *,
    autocommit: bool = False,
    connect_timeout: float = 5.0,
    timeouts: DbTimeouts | None = None,
    **extra: Any,
) -> Any:
    """A new PyMySQL connection, utf8mb4, explicit transactions by default, every wait bounded."""
    t = parse_db_url(url)
    if timeouts is not None:
        connect_timeout = timeouts.connect_s
    bounds = timeouts or DbTimeouts()
    extra.setdefault("read_timeout", int(max(1, bounds.read_s)))
    extra.setdefault("write_timeout", int(max(1, bounds.write_s)))
    return pymysql.connect(
        host=t.host,
        port=t.port,
        user=t.user,
        password=t.password,
        database=t.database,
        unix_socket=t.unix_socket,
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=int(max(1, connect_timeout)),
        **extra,
    )
