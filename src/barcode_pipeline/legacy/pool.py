"""A small, thread-safe, bounded pool of PyMySQL connections (the legacy service's "JDBC pool").

It behaves like HikariCP with its defaults, because that is what the old monolith ran on: at most
``size`` connections (no overflow), a caller waits up to ``timeout_s`` for a free one and then
fails, idle connections are validated before reuse, and a connection that broke mid-request is
thrown away rather than handed to the next request. Written here rather than pulling in SQLAlchemy
for ``QueuePool``: the whole contract fits in a hundred lines and stays easy to reason about.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql

from barcode_pipeline.errors import DatabaseUnavailable, DeliveryError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0  # HikariCP's connectionTimeout default
VALIDATE_AFTER_IDLE_S = (
    0.5  # HikariCP re-validates a connection idle for longer than this (aliveBypassWindow)
)

# HikariCP's maxLifetime default: a connection is retired when it comes back after this long, so
# none outlives a server-side or middlebox timeout (wait_timeout, a proxy's idle cut-off).
MAX_LIFETIME_S = 1800.0

Connect = Callable[[], Any]


class PoolTimeout(DeliveryError):
    """No connection became free within the pool timeout (the service answers 503)."""


class _Pooled:
    __slots__ = ("conn", "created", "last_used")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.created = self.last_used = time.monotonic()


class ConnectionPool:
    """At most ``size`` open connections; ``connection()`` lends one for the duration of a ``with`` block.

    A slot (semaphore permit) is taken first, then an idle connection is reused (most recently used
    first, so rarely used ones can age out) or a new one is opened. Leaving the block normally returns
    the connection as it is, so the caller must have committed; leaving it with an exception rolls
    back, and a connection whose rollback fails is closed and its slot freed for a fresh one.
    """

    def __init__(self, connect: Connect, size: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._connect = connect
        self.size = size
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._closed = False
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    def fill(self) -> int:
        """Open connections until ``size`` are idle (HikariCP's default ``minimumIdle = maximumPoolSize``).

        Done at start-up so the first requests do not pay for the TCP + auth handshake. Returns how
        many are idle; a database that is down is only logged, requests then connect lazily.
        """
        opened: list[_Pooled] = []
        try:
            with self._lock:
                missing = self.size - len(self._idle) - self._in_use
            for _ in range(missing):
                opened.append(_Pooled(self._connect()))
        except pymysql.MySQLError as exc:
            log.warning("could not pre-fill the connection pool: %s", exc)
        with self._lock:
            self._idle.extend(opened)
            return len(self._idle)

    @contextmanager
    def connection(
        self, *, timeout_s: float | None = None, on_wait: Callable[[float], None] | None = None
    ) -> Iterator[Any]:
        """Lend a connection; ``PoolTimeout`` if none frees up in time, ``DatabaseUnavailable`` if connect
        fails."""
        wait = self.timeout_s if timeout_s is None else timeout_s
        started = time.perf_counter()
        acquired = self._slots.acquire(timeout=wait)
        if on_wait is not None:
            on_wait(time.perf_counter() - started)
        if not acquired:
            raise PoolTimeout(
                f"no database connection free within {wait:g}s (pool of {self.size})", component="legacy-db"
            )
        try:
            item = self._checkout()
        except BaseException:
            self._slots.release()
            raise
        broken = False
        try:
            yield item.conn
        except BaseException:
            broken = not _rollback(item.conn)
            raise
        finally:
            self._checkin(item, broken)

    def close(self) -> None:
        """Close the idle connections; borrowed ones are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for item in idle:
            _close(item.conn)

    # ----- internals -----

    def _checkout(self) -> _Pooled:
        with self._lock:
            if self._closed:
                raise DatabaseUnavailable("the connection pool is closed", component="legacy-db")
            item = self._idle.pop() if self._idle else None
            self._in_use += 1
        try:
            if item is not None and time.monotonic() - item.last_used > VALIDATE_AFTER_IDLE_S:
                item = self._validated(item)
            if item is None:
                item = _Pooled(self._connect())
        except pymysql.MySQLError as exc:
            with self._lock:
                self._in_use -= 1
            raise DatabaseUnavailable(
                f"cannot connect to the database: {exc}", component="legacy-db"
            ) from exc
        except BaseException:
            with self._lock:
                self._in_use -= 1
            raise
        return item

    @staticmethod
    def _validated(item: _Pooled) -> _Pooled | None:
        """The same connection if it still answers a ping, else None (the caller opens a new one)."""
        try:
            item.conn.ping(reconnect=False)
        except pymysql.MySQLError as exc:
            log.info("dropping a dead pooled connection: %s", exc)
            _close(item.conn)
            return None
        return item

    def _checkin(self, item: _Pooled, broken: bool) -> None:
        item.last_used = time.monotonic()
        retired = item.last_used - item.created > MAX_LIFETIME_S
        with self._lock:
            self._in_use -= 1
            keep = not broken and not self._closed and not retired
            if keep:
                self._idle.append(item)
        if not keep:
            _close(item.conn)
        self._slots.release()


def _rollback(conn: Any) -> bool:
    """Roll back after a failed request; False means the connection is unusable."""
    try:
        conn.rollback()
    except Exception:
        return False
    return True


def _close(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # already closed or the socket is gone: nothing left to release
        log.debug("closing a pooled connection failed", exc_info=True)
