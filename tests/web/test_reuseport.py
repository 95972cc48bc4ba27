"""One socket per server process: connections spread over the processes, and a dead one is replaced."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Gauge
from uvicorn.config import STARTUP_FAILURE

from barcode_pipeline.web.metrics import MULTIPROC_ENV
from barcode_pipeline.web.reuseport import bind_slots
from barcode_pipeline.web.server import ServerSpec, serve
from tests.stack_helpers import free_ports

ROOT = Path(__file__).resolve().parents[2]


def _pid_app() -> FastAPI:
    app = FastAPI()
    # A live-mode gauge, as the ingest's keys age is: each process writes it to a file of its own
    Gauge("reuseport_test_live", "per process", multiprocess_mode="livemin").set(os.getpid())

    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()

    return app


def _serve(port: int) -> None:
    """Run in a subprocess: two processes of the app above, as the services are served."""
    serve(ServerSpec("reuseport-test", "127.0.0.1", port, 2, partial(_pid_app), graceful_shutdown_s=1))


def test_every_slot_listens_on_the_same_port() -> None:
    slots = bind_slots("127.0.0.1", 0, 3)
    try:
        assert len({sock.getsockname()[1] for sock in slots}) == 1
    finally:
        for sock in slots:
            sock.close()


def test_a_port_another_listener_holds_fails_the_start_even_if_it_shares() -> None:
    """An older instance that also set SO_REUSEPORT must not get half of the new one's connections."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(SystemExit) as exited:
            bind_slots("127.0.0.1", other.getsockname()[1], 2)
        assert exited.value.code == STARTUP_FAILURE


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


@pytest.fixture
def server_port(tmp_path: Path, multiproc_dir: Path) -> Iterator[int]:
    port = free_ports()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from tests.web.test_reuseport import _serve; _serve({port})"],
        cwd=ROOT,
        env={**os.environ, MULTIPROC_ENV: str(multiproc_dir)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _pids(port, 1, timeout=30)
        yield port
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def _pids(
    port: int, connections: int, timeout: float = 10, *, retry: bool = True
) -> collections.Counter[int]:
    """Which process answered each of ``connections`` new connections (``retry``: until it is up)."""
    deadline = time.monotonic() + timeout
    answered: collections.Counter[int] = collections.Counter()
    while sum(answered.values()) < connections:
        try:
            with httpx.Client(timeout=timeout) as client:  # a client per request: a new connection each
                answered[client.get(f"http://127.0.0.1:{port}/pid").json()] += 1
        except httpx.TransportError:
            if not retry:
                raise
            assert time.monotonic() < deadline, "server not answering"
            time.sleep(0.1)
    return answered


def test_new_connections_reach_every_process(server_port: int) -> None:
    answered = _pids(server_port, 40)
    assert len(answered) == 2, answered
    assert min(answered.values()) >= 8, answered  # by hash; fewer than 8 of 40 is a 1-in-10^4 event


def test_a_killed_process_is_replaced_on_its_own_socket(server_port: int, multiproc_dir: Path) -> None:
    """Connections that reach the dead process's socket wait for its replacement; none is refused.
    The dead process's live-mode metric files go with it (a frozen keys age would page)."""
    before = _pids(server_port, 40)
    victim = min(before)
    assert (multiproc_dir / f"gauge_livemin_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    after = _pids(server_port, 40, timeout=45, retry=False)
    assert victim not in after and len(after) == 2, (before, after)
    assert not (multiproc_dir / f"gauge_livemin_{victim}.db").exists()
