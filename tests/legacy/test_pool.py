"""The connection pool against the real MariaDB, and the per-process budget split."""

from __future__ import annotations

import threading
import time
from typing import Any

import pymysql
import pytest

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import DatabaseUnavailable
from barcode_pipeline.legacy import pool as pool_module
from barcode_pipeline.legacy.pool import ConnectionPool, PoolTimeout
from barcode_pipeline.legacy.server import budget
from barcode_pipeline.legacy.store import connection_factory
from tests.legacy.conftest import Db, refused_port, wait_for_pool_waiters

pytestmark = pytest.mark.integration


def _connection_id(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return int(cur.fetchone()[0])


def test_pool_is_bounded_and_times_out(legacy_db: Db) -> None:
    pool = ConnectionPool(connection_factory(legacy_db.url), size=2, timeout_s=0.3)
    try:
        assert pool.fill() == 2
        waits: list[float] = []
        with pool.connection() as a, pool.connection() as b:
            assert _connection_id(a) != _connection_id(b)
            assert pool.in_use == 2
            started = time.monotonic()
            with pytest.raises(PoolTimeout), pool.connection(on_wait=waits.append):
                pass
            assert 0.25 <= time.monotonic() - started < 5
        assert pool.in_use == 0
        assert waits and waits[0] >= 0.25

        # A waiter gets the connection as soon as it is returned.
        got: list[float] = []
        borrowing = threading.Event()
        with pool.connection(), pool.connection():

            def borrow() -> None:
                borrowing.set()
                with pool.connection(timeout_s=10, on_wait=got.append):
                    pass

            thread = threading.Thread(target=borrow)
            thread.start()
            assert borrowing.wait(10)
            wait_for_pool_waiters(pool)  # really blocked on the pool, not just about to be
            time.sleep(0.2)
        thread.join(15)
        # It waited for the return (>= the 0.2 s the connections were still held), and got one long
        # before its own 10 s timeout.
        assert got and 0.2 <= got[0] < 5, got
    finally:
        pool.close()


def test_failed_block_rolls_back_and_broken_connection_is_dropped(
    legacy_db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The killed connection must be reused without the idle ping (which would quietly replace it), however
    # slow the machine: only the statement itself can then find out that it is broken.
    monkeypatch.setattr(pool_module, "VALIDATE_AFTER_IDLE_S", 60.0)
    pool = ConnectionPool(connection_factory(legacy_db.url), size=1, timeout_s=1)
    try:
        with pytest.raises(RuntimeError), pool.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO device_center_mapping (device_id, center_id, center_name)"
                " VALUES ('POOL-TEST-ROLLBACK', 'X', 'X')"
            )
            raise RuntimeError("request failed")
        assert (
            legacy_db.query("SELECT 1 FROM device_center_mapping WHERE device_id = 'POOL-TEST-ROLLBACK'")
            == []
        )

        with pool.connection() as conn:
            first = _connection_id(conn)
        legacy_db.query(f"KILL {first}")
        deadline = time.monotonic() + 10
        while legacy_db.query("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", first):
            assert time.monotonic() < deadline, "the killed connection is still there"
            time.sleep(0.02)
        # Reused inside the validation window: the statement fails, the connection is dropped...
        with pytest.raises(pymysql.err.OperationalError), pool.connection() as conn:
            _connection_id(conn)
        assert pool.in_use == 0
        # ...and the slot it held opens a fresh one.
        with pool.connection() as conn:
            assert _connection_id(conn) != first
    finally:
        pool.close()


def test_a_connection_past_its_lifetime_is_retired_when_it_comes_back(
    legacy_db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ConnectionPool(connection_factory(legacy_db.url), size=1)
    try:
        with pool.connection() as conn:
            first = _connection_id(conn)
        with pool.connection() as conn:
            assert _connection_id(conn) == first, "a young connection is reused"
            monkeypatch.setattr(pool_module, "MAX_LIFETIME_S", 0.0)
        with pool.connection() as conn:
            assert _connection_id(conn) != first, "the old one was closed on its way back"
    finally:
        pool.close()


def test_unreachable_database_frees_the_slot() -> None:
    with refused_port() as port:
        pool = ConnectionPool(
            connection_factory(f"mysql://barcode:barcode@127.0.0.1:{port}/nothing"), size=1, timeout_s=0.2
        )
        assert pool.fill() == 0
        for _ in range(3):  # a slot leak would turn the second attempt into a PoolTimeout
            with pytest.raises(DatabaseUnavailable), pool.connection():
                pass
        pool.close()


@pytest.mark.parametrize(
    ("processes", "pool_size", "threads", "expected"),
    [(2, 10, 40, (5, 20)), (1, 10, 40, (10, 40)), (3, 10, 40, (4, 14)), (4, 1, 1, (1, 1))],
)
def test_budget_splits_pool_and_threads_over_processes(
    processes: int, pool_size: int, threads: int, expected: tuple[int, int]
) -> None:
    share = budget(Settings(ingest_processes=processes, legacy_pool_size=pool_size, legacy_threads=threads))
    assert (share.processes, share.pool_size, share.threads) == (processes, *expected)
