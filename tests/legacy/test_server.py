"""``barcode-pipeline legacy`` as a real server: several processes, one port, the pool split between them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.legacy.conftest import Db, free_port, scan

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).with_name("barcode-pipeline")


def _connections(db: Db) -> int:
    rows = db.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
        "bp_test_legacy",
    )
    return int(rows[0][0])


def test_cli_serves_with_processes_sharing_the_pool(legacy_db: Db, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / "legacy.log"
    # Connections of earlier tests' servers may take a moment to go away; they must not be counted.
    deadline = time.monotonic() + 15
    while _connections(legacy_db):
        assert time.monotonic() < deadline, "connections of earlier tests are still open"
        time.sleep(0.1)
    # free_port() can race with another process binding the port first: one retry on another port.
    for attempt in range(2):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        proc = _start(port, legacy_db, env, log_path)
        if _wait_ready(proc, base_url, legacy_db, log_path, retry_bind=attempt == 0):
            break
    try:
        sent = [scan() for _ in range(20)]
        for body in sent:  # separate connections, so the kernel spreads them over both processes
            response = httpx.post(f"{base_url}/ingest/barcode", content=orjson.dumps(body), timeout=30)
            assert response.status_code == 202, response.text
        assert len(legacy_db.rows_for(*(body["scanId"] for body in sent))) == 20
        assert _connections(legacy_db) == 4  # never more than the split budget

        # Metrics aggregate every process, whichever one answers the scrape.
        text = httpx.get(f"{base_url}/metrics", timeout=15).text
        match = re.search(r"^bp_legacy_stored_total (\S+)$", text, re.MULTILINE)
        assert match is not None, text
        assert float(match.group(1)) == 20

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        assert "2 process(es) x 2 DB connection(s) x 20 thread(s)" in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(port: int, db: Db, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                str(CLI),
                "legacy",
                "--port",
                str(port),
                "--processes",
                "2",
                "--pool-size",
                "3",
            ],
            env={**env, "BP_LEGACY_DB_URL": db.url},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(
    proc: subprocess.Popen[bytes], base_url: str, db: Db, log_path: Path, *, retry_bind: bool
) -> bool:
    """True once ready; False if the port was taken (and a retry is allowed). Kills the server otherwise."""
    try:
        # Both processes pre-fill their share: ceil(3 / 2) = 2 connections each.
        deadline = time.monotonic() + 30
        while _connections(db) < 4 or not _ready(base_url):
            if proc.poll() is not None:
                output = log_path.read_text()
                if retry_bind and "address already in use" in output.lower():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return False
                raise AssertionError(output)
            assert time.monotonic() < deadline, f"not ready in 30 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        return True
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
