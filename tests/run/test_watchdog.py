"""The liveness watchdog: a service whose loop is blocked while work waits is dumped and restarted.

Integration: the real stack and pipeline (child processes, as ``barcode-pipeline run`` starts them).
The debug hook ``BP_DEBUG_STALL_FILE`` blocks the chosen service's loop for good once the file
appears; only the watchdog can bring the work through.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from barcode_harness.settings import HarnessSettings
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.liveness import STALL_FILE_ENV, Progress
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.probes.backlog import Backlog
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.supervisor import pipeline_specs
from barcode_pipeline.run.watchdog import quiet_seconds, service_backlogs, waits_on_a_dependency
from tests.conftest import keyed
from tests.kafka_helpers import start_group_at_log_end
from tests.stack_helpers import FreezableRelay, free_ports, redis_db

DEVICE = "SEOUL-CENTER-PC-001"


def _wait_for(what: str, condition: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _scans(n: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {"barcode": f"881{i:010d}", "deviceId": DEVICE, "scanTime": now, "scanId": f"wd-{uuid.uuid4().hex}"}
        for i in range(n)
    ]


def _restarts(metrics_text: str, service: str) -> float:
    found = re.search(rf'^bp_watchdog_restarts_total{{service="{service}"}} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def _watched_settings(stack_settings: HarnessSettings, tmp_path: Path) -> HarnessSettings:
    """A pipeline of its own (database, Redis DB 13, group), one worker, a 3 s stall timeout."""
    db_url = migrate.database_url(stack_settings.db.url, "bp_test_watchdog")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    settings = stack_settings.updated(
        {
            "db_url": db_url,
            "redis_url": redis_db(stack_settings.redis.url, 13),
            "ingest_processes": 1,
            "workers": 1,
            "worker_max_delay_ms": 50,
            "stall_timeout_s": 3.0,
            "state_dir": tmp_path / "state",
            "processor_group": f"test-watchdog-{uuid.uuid4().hex[:8]}",
        }
    )
    settings = keyed(settings, "test-watchdog")  # ingest wants a scanner key
    redis.Redis.from_url(settings.redis.url).flushdb()
    start_group_at_log_end(settings, settings.processor.group)
    return settings


@pytest.mark.integration
@pytest.mark.parametrize("victim", ["processor", "worker-1"])
def test_the_watchdog_dumps_and_restarts_a_stalled_service(
    victim: str, stack_settings: HarnessSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="barcode_pipeline.run.watchdog")
    settings = _watched_settings(stack_settings, tmp_path)
    db_url, health_port = settings.db.url, free_ports()
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
            httpx.Client(
                base_url=f"http://127.0.0.1:{settings.ingest.port}",
                timeout=10,
                headers=client_headers(settings.ingest_api_key),
            ) as client,
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


@pytest.mark.integration
def test_a_worker_blocked_on_a_frozen_database_is_waiting_not_restarted(
    stack_settings: HarnessSettings, tmp_path: Path
) -> None:
    """The worker's DB connection runs through a relay that stops passing bytes, as a SIGSTOPped
    server would: the worker sits in a write bounded by its own timeouts (60 s), which the watchdog
    reports as waiting, for well over the stall timeout, and never restarts; the thaw finishes it."""
    settings = _watched_settings(stack_settings, tmp_path)
    target = urlsplit(settings.db.url)
    relay = FreezableRelay((target.hostname or "127.0.0.1", target.port or 3306))
    relay.start()
    specs = pipeline_specs(settings, workers=1, metrics=False)
    through_relay = target._replace(netloc=f"{target.netloc.rsplit(':', 1)[0]}:{relay.port}")
    for spec in specs:
        if spec.role == "worker":
            spec.env["BP_DB_URL"] = urlunsplit(through_relay)
    health_port = free_ports()
    base = f"http://127.0.0.1:{health_port}"
    try:
        with (
            running_pipeline(
                settings, log_path=tmp_path / "pipeline.log", specs=specs, start_stack=False,
                health_port=health_port,
            ),
            httpx.Client(
                base_url=f"http://127.0.0.1:{settings.ingest.port}", timeout=10,
                headers=client_headers(settings.ingest_api_key),
            ) as client,
        ):  # fmt: skip
            before, during = _scans(10), _scans(20)
            for s in before:
                assert client.post("/ingest/barcode", json=s).status_code == 202
            wait_drained(settings, timeout=60)  # the worker's connection now runs through the relay
            relay.freeze()
            frozen_at = time.time()
            for s in during:
                assert client.post("/ingest/barcode", json=s).status_code == 202

            def worker() -> dict[str, Any]:
                body: dict[str, Any] = httpx.get(f"{base}/health").json()
                assert body["services"].get("worker-1", {}).get("state") != "stalled", body
                return body

            _wait_for(
                "the watchdog to see the worker waiting on the frozen database",
                lambda: worker()["services"].get("worker-1", {}).get("state") == "waiting",
                timeout=60,
            )
            # Three stall timeouts of frozen database, as the watchdog itself observed them.
            _wait_for(
                "the watchdog to watch the frozen database for three stall timeouts",
                lambda: worker()["checked_at"] > frozen_at + 3 * settings.monitoring.stall_timeout_s,
                timeout=60,
            )
            assert worker()["services"]["worker-1"]["state"] == "waiting"
            assert _restarts(httpx.get(f"{base}/metrics").text, "worker-1") == 0
            relay.thaw()
            wait_drained(settings, timeout=90)
            check = verify_scan_ids(settings.db.url, [s["scanId"] for s in before + during])
            assert (check.stored, check.missing, check.duplicate_rows) == (30, 0, 0)
            assert _restarts(httpx.get(f"{base}/metrics").text, "worker-1") == 0
    finally:
        relay.stop()
        migrate.drop_database(settings.db.url)


def test_backlog_is_attributed_per_service() -> None:
    redis_state = Backlog(stream_undelivered={"s0": 2, "s1": 0}, pending_by_consumer={"worker-1": 5})
    records = {
        "processor-1": {"partitions": [0, 1]},
        "processor-2": {"partitions": []},  # holds nothing: answers for the partitions nobody holds
        "worker-1": {},
        "worker-2": None,
    }
    processors = {"processor-1", "processor-2"}
    got = service_backlogs(records, processors, {0: 0, 1: 3, 2: 4, 3: 0}, redis_state)
    assert got == {"processor-1": 3, "processor-2": 4, "worker-1": 7, "worker-2": 2}
    assert service_backlogs(records, processors, None, None) == dict.fromkeys(records)  # not measurable


def test_quiet_time_counts_from_the_latest_sign_of_life() -> None:
    record = {"moved_at": 100.0, "idle_at": 0.0, "waiting_at": 0.0}
    assert quiet_seconds(200.0, 0, None, record, 0.0) is None  # nothing waits: never stalled
    assert quiet_seconds(200.0, 5, 150.0, record, 0.0) == 50.0  # backlog appeared after the last move
    assert quiet_seconds(200.0, 5, 50.0, record, 0.0) == 100.0
    retrying = {**record, "waiting_at": 190.0}  # a dependency is down and being retried
    assert quiet_seconds(200.0, 5, 50.0, retrying, 0.0) == 10.0
    assert quiet_seconds(200.0, 5, 50.0, None, 180.0) == 20.0  # no record yet: from the start


def test_a_call_within_its_own_timeouts_is_waiting_not_a_stall() -> None:
    record = {"moved_at": 100.0, "idle_at": 0.0, "waiting_at": 0.0, "busy_until": 260.0}
    assert quiet_seconds(200.0, 5, 50.0, record, 0.0) == 0.0  # a DB write to a frozen server, bounded
    assert waits_on_a_dependency(200.0, record)
    assert quiet_seconds(300.0, 5, 50.0, record, 0.0) == 40.0  # the bound passed: counted again
    assert not waits_on_a_dependency(300.0, record)
    assert waits_on_a_dependency(300.0, {**record, "waiting_at": 290.0})  # retrying a server that is down
    assert not waits_on_a_dependency(300.0, {**record, "waiting_at": 90.0})  # moved since


def test_progress_marks_a_bounded_call_while_it_runs() -> None:
    progress = Progress()
    with progress.inside(60.0):
        assert progress.record()["busy_until"] > time.time() + 59
    assert progress.record()["busy_until"] == 0.0
