"""Schema migrations: numbered SQL files shipped as package data, applied once each, in order.

Deliberately tiny instead of Alembic/yoyo: the schema is a handful of plain tables, the SQL must stay
portable between MariaDB and MySQL 8 (so it is written by hand anyway), and the runner only needs
three guarantees, each from the server itself:

* once: applied versions are recorded in ``schema_migrations``;
* one runner at a time: ``GET_LOCK`` serialises concurrent ``upgrade`` calls (e.g. two
  ``barcode-pipeline run`` starting together), the second one then sees nothing left to do;
* re-runnable: DDL commits implicitly in MySQL, so the files use ``IF NOT EXISTS`` and no-op upserts
  and a file that failed half way can simply be applied again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymysql
from pymysql.constants import CLIENT

from barcode_pipeline.adapters.db import connect, parse_db_url
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "barcode_pipeline.db.migrations"
LOCK_TIMEOUT_S = 60
MIGRATION_IO_TIMEOUT_S = 3600
_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}")
DAILY_PARTITIONS = "{{DAILY_PARTITIONS}}"  # in a migration file: the partitions its data needs
INITIAL_AHEAD_DAYS = 8

CREATE_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    VARCHAR(16)  NOT NULL,
    name       VARCHAR(255) NOT NULL,
    checksum   CHAR(64)     NOT NULL,
    applied_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
"""
HISTORY_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.tables"
    " WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'"
)
SELECT_HISTORY = "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)"


class MigrationError(PipelineError):
    """The schema could not be brought up to date (server unreachable, lock busy, SQL failed)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file, ``NNNN_snake_name.sql``."""

    version: str
    name: str
    sql: str

    @property
    def ident(self) -> str:
        return f"{self.version}_{self.name}"

    @property
    def checksum(self) -> str:
        """Recorded when applied, so an edited file that was already applied is noticed."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: str
    name: str
    checksum: str
    applied_at: datetime

    @property
    def ident(self) -> str:
        return f"{self.version}_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    applied: list[AppliedMigration]
    pending: list[Migration]
    modified: list[str]  # applied, but the file's checksum changed since
    unknown: list[str]  # applied, but this code has no such file (a newer release applied it)


def discover() -> list[Migration]:
    """All migration files of the package, in version order; rejects misnamed or duplicate versions."""
    found: dict[str, Migration] = {}
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_snake_case.sql")
        version = match["version"]
        if version in found:
            raise MigrationError(f"two migrations share version {version}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def database_url(db_url: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(db_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _server_connection(db_url: str) -> Any:
    """A connection that does not need the target database to exist yet."""
    return connect(database_url(db_url, "information_schema"), autocommit=True)


def _checked_name(db_url: str) -> str:
    name = parse_db_url(db_url).database
    if not _DATABASE_NAME.fullmatch(name):
        raise MigrationError(f"refusing unusual database name {name!r}")
    return name


def create_database(db_url: str) -> bool:
    """Create the URL's database if absent; True when it was created."""
    name = _checked_name(db_url)
    conn = _server_connection(db_url)
    try:
        with conn.cursor() as cur:
            created = cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        return bool(created)
    finally:
        conn.close()


def drop_database(db_url: str) -> None:
    """Drop the URL's database if present (test fixtures and benchmarks use private databases)."""
    name = _checked_name(db_url)
    conn = _server_connection(db_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def _connect(db_url: str) -> Any:
    try:
        # MULTI_STATEMENTS: each file runs as written, without a hand-made SQL splitter.
        return connect(
            db_url,
            autocommit=True,
            client_flag=CLIENT.MULTI_STATEMENTS,
            init_command="SET time_zone = '+00:00'",
            # Bounded, but far above the default: a migration step may rebuild a large table, and
            # GET_LOCK waits up to LOCK_TIMEOUT_S for another run.
            read_timeout=MIGRATION_IO_TIMEOUT_S,
            write_timeout=MIGRATION_IO_TIMEOUT_S,
        )
    except pymysql.err.MySQLError as exc:
        raise MigrationError(
            f"cannot connect to {_safe(db_url)}: {exc}",
            component="db",
            hint="is the server up and the database created? try: db upgrade --create-database",
        ) from exc


def _safe(db_url: str) -> str:
    t = parse_db_url(db_url)
    return f"{t.host}:{t.port}/{t.database}"


def _history(cur: Any) -> list[AppliedMigration]:
    cur.execute(HISTORY_EXISTS)
    if cur.fetchone()[0] == 0:
        return []
    cur.execute(SELECT_HISTORY)
    return [AppliedMigration(*row) for row in cur.fetchall()]


def _compare(applied: list[AppliedMigration], files: list[Migration]) -> MigrationStatus:
    by_version = {m.version: m for m in files}
    done = {a.version for a in applied}
    return MigrationStatus(
        applied=applied,
        pending=[m for m in files if m.version not in done],
        modified=[
            a.ident
            for a in applied
            if a.version in by_version and by_version[a.version].checksum != a.checksum
        ],
        unknown=[a.ident for a in applied if a.version not in by_version],
    )


def _render(cur: Any, sql: str) -> str:
    """Fill in what only the database can tell (the checksum stays the file's own)."""
    if DAILY_PARTITIONS not in sql:
        return sql
    from barcode_pipeline.db.partitions import initial_partitions

    return sql.replace(DAILY_PARTITIONS, initial_partitions(cur, ahead_days=INITIAL_AHEAD_DAYS))


def _run_script(cur: Any, sql: str) -> None:
    """Execute a multi-statement script and drain every result, so an error in any statement raises."""
    cur.execute(sql)
    while cur.nextset():
        pass


def upgrade(db_url: str, *, lock_timeout_s: float = LOCK_TIMEOUT_S, before: str | None = None) -> list[str]:
    """Apply every pending migration in order; returns the ones applied now (``[]`` when up to date).

    ``before``: stop ahead of that version (a schema as an older release left it, to test or time
    the migrations after it on a filled table)."""
    files = discover()
    lock_name = f"bp_migrate.{parse_db_url(db_url).database}"[:64]
    conn = _connect(db_url)
    applied_now: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, %s)", (lock_name, int(lock_timeout_s)))
            if cur.fetchone()[0] != 1:
                raise MigrationError(
                    f"another migration run holds lock {lock_name!r} for over {lock_timeout_s:.0f}s",
                    component="db",
                )
            try:
                cur.execute(CREATE_HISTORY_TABLE)
                state = _compare(_history(cur), files)  # read under the lock: a rival may have finished
                for ident in state.modified:
                    log.warning("migration %s was edited after it was applied; not re-applying it", ident)
                for migration in state.pending:
                    if before is not None and migration.version >= before:
                        break
                    started = time.perf_counter()
                    try:
                        _run_script(cur, _render(cur, migration.sql))
                    except pymysql.err.MySQLError as exc:
                        raise MigrationError(
                            f"migration {migration.ident} failed: {exc}", component="db"
                        ) from exc
                    cur.execute(RECORD_MIGRATION, (migration.version, migration.name, migration.checksum))
                    applied_now.append(migration.ident)
                    log.info("applied %s in %.2fs", migration.ident, time.perf_counter() - started)
            finally:
                cur.execute("SELECT RELEASE_LOCK(%s)", (lock_name,))
                cur.fetchall()
    except pymysql.err.MySQLError as exc:
        raise MigrationError(f"migrating {_safe(db_url)} failed: {exc}", component="db") from exc
    finally:
        conn.close()
    return applied_now


def status(db_url: str) -> MigrationStatus:
    """Applied, pending, edited-after-apply and unknown migrations of the URL's database."""
    conn = _connect(db_url)
    try:
        with conn.cursor() as cur:
            return _compare(_history(cur), discover())
    except pymysql.err.MySQLError as exc:
        raise MigrationError(f"reading migration state of {_safe(db_url)} failed: {exc}") from exc
    finally:
        conn.close()
