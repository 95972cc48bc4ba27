"""Fixtures for the legacy baseline: a private database on the stack's MariaDB and real HTTP servers.

The database ``bp_test_legacy`` is dropped, re-created and migrated once per session, so the shared
``barcode`` database is never touched. Servers are real uvicorn instances on a free port, run in a
thread of the test process, so blocking behaviour (pool waits, row locks) is exercised for real.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings
from barcode_pipeline.db.migrate import create_database, database_url, drop_database, upgrade
from barcode_pipeline.legacy.app import create_app
from barcode_pipeline.legacy.pool import ConnectionPool

TEST_DB = "bp_test_legacy"
SEEDED = {
    "SEOUL-CENTER-PC-001": "CENTER-1",
    "SEOUL-CENTER-PC-002": "CENTER-2",
    "SEOUL-CENTER-PC-003": "CENTER-3",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port held bound but not listening: connecting to it is refused for sure.

    Unlike a port from :func:`free_port`, nothing else (a test server, say) can take it meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def pool_waiters(pool: ConnectionPool) -> int:
    """Threads blocked in ``pool.connection()`` waiting for a free slot.

    Read from the slot semaphore's condition (CPython's ``threading`` internals): the only exact
    signal that a borrower is queued, which a test needs before it frees a connection for it.
    """
    condition = vars(pool._slots)["_cond"]
    return len(condition._waiters)


def wait_for_pool_waiters(pool: ConnectionPool, count: int = 1, within_s: float = 10) -> None:
    deadline = time.monotonic() + within_s
    while pool_waiters(pool) < count:
        assert time.monotonic() < deadline, f"fewer than {count} borrower(s) queued on the pool"
        time.sleep(0.005)


def scan(device: str = "SEOUL-CENTER-PC-001", **overrides: Any) -> dict[str, Any]:
    """A valid wire-format scan with a unique scanId and barcode."""
    body: dict[str, Any] = {
        "barcode": f"BC{uuid.uuid4().hex[:12]}",
        "deviceId": device,
        "scanTime": int(time.time() * 1000),
        "scanId": f"legacy-test-{uuid.uuid4().hex}",
    }
    body.update(overrides)
    return body


class Db:
    """Direct access to the test database, for assertions and for holding locks."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Any:
        return connect(self.url, autocommit=False)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = connect(self.url, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def rows_for(self, *scan_ids: str) -> list[tuple[Any, ...]]:
        """(scan_id, internal_barcode_id, center_id, device_id, original_barcode) of those scans."""
        if not scan_ids:
            return []
        marks = ", ".join(["%s"] * len(scan_ids))
        return self.query(
            "SELECT scan_id, internal_barcode_id, center_id, device_id, original_barcode"
            f" FROM legacy_barcodes WHERE scan_id IN ({marks}) ORDER BY id",
            *scan_ids,
        )


@pytest.fixture(scope="session")
def legacy_db(stack_settings: Settings) -> Iterator[Db]:
    """A fresh ``bp_test_legacy`` database, migrated by the real runner (tables + seeded mapping)."""
    url = database_url(stack_settings.db.url, TEST_DB)
    drop_database(url)
    create_database(url)
    upgrade(url)
    yield Db(url)


@pytest.fixture
def legacy_settings(make_settings: Callable[..., Settings], legacy_db: Db) -> Callable[..., Settings]:
    """Settings pointing at the test database, with per-test overrides."""

    def factory(**overrides: Any) -> Settings:
        return make_settings(**{"db_url": legacy_db.url, **overrides})

    return factory


class ThreadServer:
    """A real uvicorn server for one app, in a background thread of the test process.

    The listening socket is bound here and handed to uvicorn, so there is no window in which another
    process could take the port (as there would be with :func:`free_port`).
    """

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.app = app
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan="on", log_config=None, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"legacy-test-{self.port}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert self._thread.is_alive(), "the test server died while starting"
            assert time.monotonic() < deadline, "the test server did not start in 15 s"
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)


@pytest.fixture
def serve_legacy(legacy_settings: Callable[..., Settings]) -> Iterator[Callable[..., ThreadServer]]:
    """Factory: start a legacy server; ``app_options`` go to ``create_app``, the rest to the settings."""
    servers: list[ThreadServer] = []

    def factory(app_options: dict[str, Any] | None = None, **overrides: Any) -> ThreadServer:
        server = ThreadServer(create_app(legacy_settings(**overrides), **(app_options or {})))
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def legacy(serve_legacy: Callable[..., ThreadServer]) -> Iterator[httpx.Client]:
    """A client of a default-configured legacy server."""
    with serve_legacy().client() as client:
        yield client
