"""Database connections (PyMySQL) from ``BP_DB_URL`` (``mysql://user:pass@host:port/db``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import SERVER_STATUS
from pymysql.converters import escape_string

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError

_EPOCH = datetime(1970, 1, 1)


def db_time(epoch_ms: int) -> datetime:
    """Epoch ms as the naive UTC datetime a DATETIME(3) column stores (sessions run in UTC)."""
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def string_escaper(conn: Any) -> Callable[[str], str]:
    """How to escape a string literal's body on this connection (without the quotes).

    Under ``NO_BACKSLASH_ESCAPES`` a backslash is an ordinary character and only ``'`` is doubled;
    otherwise quotes, backslashes and control bytes get backslash escapes (what PyMySQL does itself).
    """
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return lambda text: text.replace("'", "''")
    return escape_string


@dataclass(frozen=True, slots=True)
class DbTarget:
    host: str
    port: int
    user: str
    password: str
    database: str
    unix_socket: str | None = None
    ssl_ca: str | None = None  # verify the server against this CA (TLS required from then on)
    ssl_cert: str | None = None  # client certificate and key, for servers that ask for one
    ssl_key: str | None = None
    ssl_verify_identity: bool = True  # the server certificate must name the host connected to

    def ssl_args(self) -> dict[str, Any]:
        """PyMySQL's TLS arguments: plaintext without a CA, else a verified connection.

        Plaintext is explicit: by default PyMySQL (1.2) builds a TLS context for every connection
        and tries an unverified upgrade, which protects against nothing and cost the ingest's key
        reload thread a tenth of its process's CPU (loading the system CA store each time).
        With a CA: its ``ssl_*`` keywords, not an ``ssl`` dict: given any ``ssl_verify_*`` keyword,
        PyMySQL replaces the dict with one built from the keywords alone, and the CA was lost so."""
        if self.ssl_ca is None:
            return {"ssl_disabled": True}
        args: dict[str, Any] = {"ssl_ca": self.ssl_ca, "ssl_verify_cert": True}
        args["ssl_verify_identity"] = self.ssl_verify_identity
        if self.ssl_cert:
            args["ssl_cert"] = self.ssl_cert
        if self.ssl_key:
            args["ssl_key"] = self.ssl_key
        return args


def parse_db_url(url: str) -> DbTarget:
    """Accept ``mysql://``, ``mysql+pymysql://`` and ``mariadb://`` URLs.

    Query parameters: ``unix_socket``; ``ssl_ca`` (turns on verified TLS), ``ssl_cert``, ``ssl_key``,
    ``ssl_verify_identity=false`` (only for a server certificate without the host's name)."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("mysql", "mariadb"):
        raise ConfigError(f"BP_DB_URL must start with mysql:// or mariadb://, got {parts.scheme!r}")
    # An unencoded '/', '?' or '#' in the password ends the host part: what follows lands in the
    # port (urlsplit's error would quote it) or in the database name (which errors would print).
    broken = ConfigError(
        "BP_DB_URL cannot be parsed: if the password holds '/', '?' or '#', percent-encode it "
        "(e.g. '/' as %2F)"
    )
    if "@" in parts.path:
        raise broken
    try:
        port = parts.port or 3306
    except ValueError:
        raise broken from None
    database = parts.path.lstrip("/")
    if not database:
        raise ConfigError("BP_DB_URL must name a database, e.g. mysql://user:pass@127.0.0.1:3307/barcode")
    query = {k: unquote(v) for k, v in (p.split("=", 1) for p in parts.query.split("&") if "=" in p)}
    return DbTarget(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=database,
        unix_socket=query.get("unix_socket"),
        ssl_ca=query.get("ssl_ca"),
        ssl_cert=query.get("ssl_cert"),
        ssl_key=query.get("ssl_key"),
        ssl_verify_identity=query.get("ssl_verify_identity", "true").lower() not in ("false", "0", "no"),
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
        return cls(settings.db.connect_timeout_s, settings.db.read_timeout_s, settings.db.write_timeout_s)


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
        **t.ssl_args(),
        **extra,
    )
