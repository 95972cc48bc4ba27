"""The liveness watchdog: a service whose loop is blocked while work waits is dumped and restarted.

Integration: the real stack and pipeline (child processes, as ``barcode-pipeline run`` starts them).
The debug hook ``BP_DEBUG_STALL_FILE`` blocks the chosen service's loop for good once the file
appears; only the watchdog can bring the work through.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.liveness import STALL_FILE_ENV
from barcode_pipeline.ops.backlog import Backlog
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.supervisor import pipeline_specs
from barcode_pipeline.run.watchdog import quiet_seconds, service_backlogs
from tests.kafka_helpers import start_group_at_log_end
from tests.stack_helpers import redis_db

DEVICE = "SEOUL-CENTER-PC-001"


def _wait_for(what: str, condition: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scans(n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {"barcode": f"881{i:010d}", "deviceId": DEVICE, "scanTime": now, "scanId": f"wd-{uuid.uuid4().hex}"}
        for i in range(n)
    ]


def _restarts(metrics_text: str, service: str) -> float:
    found = re.search(rf'^bp_watchdog_restarts_total{{service="{service}"}} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.integration
@pytest.mark.parametrize("victim", ["processor", "worker-1"])
def test_the_watchdog_dumps_and_restarts_a_stalled_service(
    victim: str, stack_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="barcode_pipeline.run.watchdog")
    db_url = migrate.database_url(stack_settings.db_url, "bp_test_watchdog")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    redis_url = redis_db(stack_settings.redis_url, 13)
    health_port = _free_port()
    settings = stack_settings.model_copy(
        update={"db_url": db_url, "redis_url": redis_url, "ingest_processes": 1, "workers": 1,
                "worker_max_delay_ms": 50, "stall_timeout_s": 3.0, "state_dir": tmp_path / "state",
                "processor_group": f"test-watchdog-{uuid.uuid4().hex[:8]}"}
    )  # fmt: skip
    redis.Redis.from_url(redis_url).flushdb()
    start_group_at_log_end(settings, settings.processor_group)
    stall_file = tmp_path / "stall-now"
    specs = pipeline_specs(settings, workers=1, metrics=False)
    for spec in specs:
        if spec.name == victim:
            spec.env[STALL_FILE_ENV] = str(stall_file)
    log_path = tmp_path / "pipeline.log"
    base = f"http://127.0.0.1:{health_port}"
    try:
        with (
            running_pipeline(
                settings, log_path=log_path, specs=specs, start_stack=False, health_port=health_port
            ),
            httpx.Client(base_url=f"http://127.0.0.1:{settings.ingest_port}", timeout=10) as client,
        ):
            before, after = _scans(20), _scans(50)
            for s in before:
                assert client.post("/ingest/barcode", json=s).status_code == 202
            wait_drained(settings, timeout=60)
            assert httpx.get(f"{base}/health").status_code == 200
            assert _restarts(httpx.get(f"{base}/metrics").text, victim) == 0

            stall_file.touch()
            _wait_for("the victim to reach the stall hook", lambda: not stall_file.exists())
            for s in after:
                assert client.post("/ingest/barcode", json=s).status_code == 202

            def stalled() -> dict[str, Any] | None:
                reply = httpx.get(f"{base}/health")
                body: dict[str, Any] = reply.json()
                return body if reply.status_code == 503 and body["stalled"] == [victim] else None

            report = _wait_for("the health endpoint to report the stall", stalled, timeout=60)
            assert report["services"][victim]["backlog"] > 0
            one = httpx.get(f"{base}/health/{victim}")  # the per-service probe
            assert one.status_code == 503 and one.json()["state"] == "stalled"
            assert httpx.get(f"{base}/health/nobody").status_code == 404
            status = subprocess.run(
                [sys.executable, "-m", "barcode_pipeline", "status"],
                env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert status.returncode == 1
            assert f"{victim} is STALLED" in status.stderr and "STALLED" in status.stdout

            _wait_for(
                "the watchdog restart to be counted",
                lambda: _restarts(httpx.get(f"{base}/metrics").text, victim) == 1,
                timeout=60,
            )
            wait_drained(settings, timeout=90)
            check = verify_scan_ids(db_url, [s["scanId"] for s in before + after])
            assert (check.stored, check.missing, check.duplicate_rows) == (70, 0, 0)
            _wait_for("health to recover", lambda: httpx.get(f"{base}/health").status_code == 200)
            assert httpx.get(f"{base}/health/{victim}").json()["restarts"] == 1
        said = caplog.text  # the supervisor's own log
        assert f"watchdog: {victim} (pid" in said and f"watchdog: {victim} restarted" in said
        text = log_path.read_text()  # the children's output
        # faulthandler's dump, in the victim's prefixed output, shows where its loop was blocked.
        dump = [line for line in text.splitlines() if line.startswith(f"[{victim}] ")]
        assert any("most recent call first" in line for line in dump)
        assert any("liveness.py" in line and "__call__" in line for line in dump)
    finally:
        migrate.drop_database(db_url)


def test_backlog_is_attributed_per_service() -> None:
    redis_state = Backlog(stream_undelivered={"s0": 2, "s1": 0}, pending_by_consumer={"worker-1": 5})
    records = {
        "processor-1": {"partitions": [0, 1]},
        "processor-2": {"partitions": []},  # holds nothing: answers for the partitions nobody holds
        "worker-1": {},
        "worker-2": None,
    }
    got = service_backlogs(records, {0: 0, 1: 3, 2: 4, 3: 0}, redis_state)
    assert got == {"processor-1": 3, "processor-2": 4, "worker-1": 7, "worker-2": 2}
    assert service_backlogs(records, None, None) == dict.fromkeys(records)  # not measurable


def test_quiet_time_counts_from_the_latest_sign_of_life() -> None:
    record = {"moved_at": 100.0, "idle_at": 0.0, "waiting_at": 0.0}
    assert quiet_seconds(200.0, 0, None, record, 0.0) is None  # nothing waits: never stalled
    assert quiet_seconds(200.0, 5, 150.0, record, 0.0) == 50.0  # backlog appeared after the last move
    assert quiet_seconds(200.0, 5, 50.0, record, 0.0) == 100.0
    retrying = {**record, "waiting_at": 190.0}  # a dependency is down and being retried
    assert quiet_seconds(200.0, 5, 50.0, retrying, 0.0) == 10.0
    assert quiet_seconds(200.0, 5, 50.0, None, 180.0) == 20.0  # no record yet: from the start
