"""Durable local outbox of a center PC (SQLite in WAL mode). A scan is committed here *before* it is
sent and leaves ``pending`` only once acknowledged or refused for good: a crash or outage loses nothing.
Single-threaded on purpose: many rows per transaction keep thousands of scans/s at ``synchronous=FULL``."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import IO, Literal, NamedTuple

from barcode_pipeline.domain.scan import ScanEvent
from barcode_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY,
    scan_id         TEXT    NOT NULL,
    device_id       TEXT    NOT NULL,
    barcode         TEXT    NOT NULL,
    scan_time       INTEGER NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    done_ms         INTEGER,
    last_status     INTEGER,
    last_error      TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_ms) WHERE state = 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1'), ('purged_acked', '0');
"""
# A row's scan in ScanEvent's field order, so that ``ScanEvent(*columns)`` reads it back.
_SCAN_COLUMNS = "seq, barcode, device_id, scan_time, scan_id"
# An outcome counts an attempt and applies only to a row still pending (a late answer changes nothing).
_OUTCOME = (
    "UPDATE outbox SET attempts = attempts + 1, state = ?, done_ms = ?, next_attempt_ms ="
    " COALESCE(?, next_attempt_ms), last_status = ?, last_error = substr(?, 1, 4000)"
    " WHERE seq = ? AND state = 0"
)


class State(IntEnum):
    PENDING = 0
    ACKED = 1
    REJECTED = 2


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A scan held by the outbox; ``seq`` is its row key (a resend of a scan is a row of its own)."""

    seq: int
    scan: ScanEvent
    attempts: int = 0


class Outcome(NamedTuple):
    """The end of one attempt: ACKED; PENDING again (a retry) not before ``next_attempt_ms``; or
    REJECTED, a permanent refusal (4xx other than 408/429) kept with the server's answer, never resent.
    """

    seq: int
    state: State
    status: int | None
    detail: str | None = None  # a retry's error, a rejection's response body
    next_attempt_ms: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    total: int
    pending: int
    acked: int
    rejected: int
    sent: int  # scans sent at least once
    attempts: int  # HTTP attempts over all scans (so attempts - sent = retries)


@dataclass(frozen=True, slots=True)
class WriteResult:
    added: list[OutboxItem]
    acked: int
    retried: int
    rejected: int


class Outbox:
    """The outbox file: one writer at a time (a lock file enforces it), from a single thread."""

    def __init__(self, path: Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._lock(path)
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            with self._transaction() as cur:  # a reader never sees half a schema
                for statement in _SCHEMA.split(";")[:-1]:
                    cur.execute(statement)
                self._next_seq: int = 1 + (cur.execute("SELECT MAX(seq) FROM outbox").fetchone()[0] or 0)
        except BaseException:
            self._lock_file.close()  # closing the file releases its lock
            raise

    @staticmethod
    def _lock(path: Path) -> IO[bytes]:
        """Two simulators on one outbox would send every scan twice; refuse the second one."""
        handle = open(f"{path}.lock", "wb", buffering=0)  # noqa: SIM115 - held open for the outbox's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise ConfigError(
                f"outbox {path} is in use by another process",
                component="scanner",
                hint="one simulator per outbox; pass another --outbox",
            ) from None
        handle.write(f"{os.getpid()}\n".encode())
        return handle

    def close(self) -> None:
        with self._lock_file:  # closing the file releases its lock
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, taking the write lock up front (``BEGIN IMMEDIATE``)."""
        with self._conn, contextlib.closing(self._conn.cursor()) as cur:  # commits, or rolls back on error
            cur.execute("BEGIN IMMEDIATE")
            yield cur

    def _update(self, sql: str, *params: object) -> int:
        with self._transaction() as cur:
            return cur.execute(sql, params).rowcount

    def write(
        self,
        new: Sequence[ScanEvent] = (),
        *,
        now_ms: int,
        lease_ms: int = 0,
        leased: int | None = None,
        outcomes: Sequence[Outcome] = (),
    ) -> WriteResult:
        """Insert new scans and record outcomes, all in one transaction (one fsync).

        The first ``leased`` new scans (all when None) are due again only after ``lease_ms``: the
        caller sends them right away from memory, and the lease keeps :meth:`claim_due` from
        handing them out a second time. The others are due now and wait for :meth:`claim_due`.
        """
        leased = len(new) if leased is None else leased
        due = [now_ms + lease_ms] * leased + [now_ms] * (len(new) - leased)
        added = [OutboxItem(self._next_seq + i, scan) for i, scan in enumerate(new)]
        rows = [
            (a.seq, a.scan.barcode, a.scan.device_id, a.scan.scan_time, a.scan.scan_id, due[i], now_ms)
            for i, a in enumerate(added)
        ]
        done_ms = {State.ACKED: now_ms, State.PENDING: None, State.REJECTED: now_ms}
        params = [(o.state, done_ms[o.state], o.next_attempt_ms, o.status, o.detail, o.seq) for o in outcomes]
        with self._transaction() as cur:
            cur.executemany(
                f"INSERT INTO outbox ({_SCAN_COLUMNS}, next_attempt_ms, created_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            retried, acked, rejected = (  # State's order: PENDING (a retry), ACKED, REJECTED
                cur.executemany(_OUTCOME, [p for p in params if p[0] == s]).rowcount for s in State
            )
        self._next_seq += len(added)
        return WriteResult(added, acked, retried, rejected)

    def claim_due(
        self, *, now_ms: int, limit: int, lease_ms: int, exclude: AbstractSet[int] = frozenset()
    ) -> list[OutboxItem]:
        """Pending rows due now (oldest first), leased for ``lease_ms`` so they are not claimed twice;
        ``exclude``: rows the caller holds in memory (their lease may have run out in a queue)."""
        rows = self._conn.execute(
            f"SELECT {_SCAN_COLUMNS}, attempts FROM outbox WHERE state = 0 AND next_attempt_ms <= ?"
            " ORDER BY next_attempt_ms, seq LIMIT ?",
            (now_ms, limit + len(exclude)),
        ).fetchall()
        items = [OutboxItem(r[0], ScanEvent(*r[1:5]), r[5]) for r in rows if r[0] not in exclude][:limit]
        if items:
            with self._transaction() as cur:
                cur.executemany(
                    "UPDATE outbox SET next_attempt_ms = ? WHERE seq = ?",
                    [(now_ms + lease_ms, item.seq) for item in items],
                )
        return items

    def make_all_due(self, now_ms: int) -> int:
        """On start-up nothing is in flight: leases and back-offs of a previous run end now."""
        sql = "UPDATE outbox SET next_attempt_ms = ? WHERE state = 0 AND next_attempt_ms > ?"
        return self._update(sql, now_ms, now_ms)

    def requeue_rejected(self, now_ms: int) -> int:
        """Give rejected scans another chance (e.g. after fixing a wrong URL that answered 404)."""
        sql = "UPDATE outbox SET state = 0, next_attempt_ms = ?, done_ms = NULL WHERE state = 2"
        return self._update(sql, now_ms)

    def purge_acked(self) -> int:
        """Delete acknowledged rows to keep the file small; their number stays in the counts."""
        with self._transaction() as cur:
            purged = cur.execute("DELETE FROM outbox WHERE state = 1").rowcount
            cur.execute(
                "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = 'purged_acked'",
                (purged,),
            )
            return purged


def outbox_status(path: Path) -> OutboxCounts:
    """Counts of an outbox file, readable while a simulator writes it (WAL readers don't block);
    purged acknowledged rows still count as acked, sent once and attempted once."""
    if not path.exists():
        raise ConfigError(f"no outbox at {path}", component="scanner")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=10.0)) as conn:
        if conn.execute("SELECT name FROM sqlite_master WHERE name = 'outbox'").fetchone() is None:
            raise ConfigError(f"{path} is not a scanner outbox", component="scanner")
        row = conn.execute(
            "SELECT COUNT(*), SUM(state = 0), SUM(state = 1), SUM(state = 2), SUM(attempts > 0),"
            " SUM(attempts), (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'purged_acked') FROM outbox"
        ).fetchone()
    total, pending, acked, rejected, sent, attempts, purged = (int(v or 0) for v in row)
    return OutboxCounts(total + purged, pending, acked + purged, rejected, sent + purged, attempts + purged)
