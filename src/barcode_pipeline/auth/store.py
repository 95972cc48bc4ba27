"""The ``scanner_keys`` table: create, list and revoke keys; load them for an ingest process's cache."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pymysql

from barcode_pipeline.adapters.db import connect, parse_db_url
from barcode_pipeline.auth.keys import check_name, digest, new_secret
from barcode_pipeline.domain.devices import parse_patterns
from barcode_pipeline.errors import ConfigError, DatabaseUnavailable

INSERT_KEY = (
    "INSERT INTO scanner_keys (name, key_digest, device_patterns, scans_per_s) VALUES (%s, %s, %s, %s)"
)
DELETE_KEY = "DELETE FROM scanner_keys WHERE name = %s"
REVOKE_KEY = (
    "UPDATE scanner_keys SET revoked_at = CURRENT_TIMESTAMP(3) WHERE name = %s AND revoked_at IS NULL"
)
SELECT_KEYS = (
    "SELECT name, key_digest, device_patterns, created_at, revoked_at, scans_per_s FROM scanner_keys "
    "ORDER BY name"
)
SELECT_NAME = "SELECT revoked_at FROM scanner_keys WHERE name = %s"
_DUPLICATE_ENTRY = 1062
_NO_SUCH_TABLE = 1146


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A row of ``scanner_keys``: never the secret, only its digest."""

    name: str
    digest: str
    patterns: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    rate: float | None = None  # scans/s across the ingest; None: BP_INGEST_KEY_RATE; 0: no limit

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _connect(db_url: str, timeout_s: float) -> Any:
    try:
        return connect(
            db_url,
            autocommit=True,
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            write_timeout=timeout_s,
        )
    except pymysql.Error as exc:
        where = parse_db_url(db_url)
        raise DatabaseUnavailable(
            f"cannot connect to the database at {where.host}:{where.port}: {exc}", component="keys"
        ) from exc


def _failed(exc: pymysql.Error) -> DatabaseUnavailable:
    if exc.args and exc.args[0] == _NO_SUCH_TABLE:
        return DatabaseUnavailable(
            "table scanner_keys is missing", component="keys", hint="run `barcode-pipeline db upgrade`"
        )
    return DatabaseUnavailable(f"database error: {exc}", component="keys")


def create_key(
    db_url: str,
    name: str,
    patterns: str | tuple[str, ...],
    *,
    rate: int | None = None,
    replace: bool = False,
    timeout_s: float = 10.0,
) -> str:
    """Store a new key and return its secret (the only time it exists outside the caller).

    ``rate``: its own limit in scans/s (0: none), else BP_INGEST_KEY_RATE applies. ``replace`` drops
    an existing key of that name first (the harness re-creates its key every run).
    """
    if rate is not None and rate < 0:
        raise ConfigError(f"--rate must be 0 (no limit) or more scans/s, not {rate}")
    check_name(name)
    allowed = parse_patterns(patterns)
    secret = new_secret()
    conn = _connect(db_url, timeout_s)
    try:
        with conn.cursor() as cur:
            if replace:
                cur.execute(DELETE_KEY, (name,))
            cur.execute(INSERT_KEY, (name, digest(secret), ",".join(allowed), rate))
    except pymysql.IntegrityError as exc:
        if exc.args and exc.args[0] == _DUPLICATE_ENTRY:
            raise ConfigError(f"a key named {name!r} exists already (revoked keys keep their name)") from None
        raise _failed(exc) from exc
    except pymysql.Error as exc:
        raise _failed(exc) from exc
    finally:
        conn.close()
    return secret


def revoke_key(db_url: str, name: str, *, timeout_s: float = 10.0) -> None:
    """Mark the key revoked; every ingest process stops accepting it within its refresh interval."""
    check_name(name)
    conn = _connect(db_url, timeout_s)
    try:
        with conn.cursor() as cur:
            if cur.execute(REVOKE_KEY, (name,)):
                return
            cur.execute(SELECT_NAME, (name,))
            row = cur.fetchone()
    except pymysql.Error as exc:
        raise _failed(exc) from exc
    finally:
        conn.close()
    if row is None:
        raise ConfigError(f"no key named {name!r}")
    # already revoked: revoking again is a no-op, not an error


def load_keys(db_url: str, *, timeout_s: float = 3.0) -> list[StoredKey]:
    """Every key, revoked ones included (so their use is reported as revoked)."""
    conn = _connect(db_url, timeout_s)
    try:
        with conn.cursor() as cur:
            cur.execute(SELECT_KEYS)
            rows = cur.fetchall()
    except pymysql.Error as exc:
        raise _failed(exc) from exc
    finally:
        conn.close()
    return [
        StoredKey(
            str(name), str(key_digest), tuple(str(patterns).split(",")), created, revoked,
            None if rate is None else float(rate),
        )
        for name, key_digest, patterns, created, revoked, rate in rows
    ]  # fmt: skip
