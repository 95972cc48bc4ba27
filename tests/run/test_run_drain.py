"""``barcode-pipeline run`` drained front to back by SIGTERM under load.

The real command in its own process (ingest with two processes, a processor, two workers), clients
sending continuously and one request held in flight across the signal. The drain must answer every
request it started, exit 0, and leave nothing half-done: the workers hold no unacknowledged entry.
Records still in Kafka when the processor stopped are not lost but the next start's work, so a
second pipeline then drains, and every acknowledged scan must be stored exactly once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from barcode_harness.settings import HarnessSettings
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.probes.backlog import Backlog, redis_backlog
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from barcode_pipeline.run.startup import wait_http_ok
from tests.conftest import keyed
from tests.drain_helpers import HeldRequest, Senders
from tests.kafka_helpers import start_group_at_log_end
from tests.stack_helpers import redis_db

pytestmark = pytest.mark.integration

DEVICES = ("SEOUL-CENTER-PC-001", "SEOUL-CENTER-PC-002", "SEOUL-CENTER-PC-003")


def _scan() -> dict[str, Any]:
    n = uuid.uuid4().int
    return {"barcode": f"882{n % 10**10:010d}", "deviceId": DEVICES[n % len(DEVICES)],
            "scanTime": int(time.time() * 1000), "scanId": f"drain-{uuid.uuid4().hex}"}  # fmt: skip


def test_run_drains_front_to_back_on_sigterm_under_load(
    stack_settings: HarnessSettings, tmp_path: Path
) -> None:
    db_url = migrate.database_url(stack_settings.db.url, "bp_test_run_drain")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    settings = stack_settings.updated(
        {
            "db_url": db_url,
            "redis_url": redis_db(stack_settings.redis.url, 14),
            "state_dir": tmp_path / "state",
            "metrics_port_base": 0,
            "workers": 2,
            "processor_group": f"test-drain-{uuid.uuid4().hex[:8]}",
        }
    )
    settings = keyed(settings, "test-run-drain")
    auth = client_headers(settings.ingest_api_key)
    redis.Redis.from_url(settings.redis.url).flushdb()
    start_group_at_log_end(settings, settings.processor.group)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(settings_env(settings))
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "barcode_pipeline", "run", "--no-stack"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{settings.ingest.port}"
        wait_http_ok(f"{base_url}/ready", timeout=90)
        held = HeldRequest(settings.ingest.port, _scan(), headers=auth)
        senders = Senders(base_url, _scan, threads=4, headers=auth)
        senders.start()
        senders.wait_answers(200)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while "Shutting down" not in log_path.read_text():  # the ingest's drain has begun
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the ingest never started shutting down"
            time.sleep(0.05)
        reply = held.finish()
        assert reply.startswith(b"HTTP/1.1 202"), reply  # the in-flight request was answered, not reset
        assert proc.wait(120) == 0, log_path.read_text()[-3000:]
        senders.join(20)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log_path.read_text()
    assert "stopped: ingest=0, processor=0, worker-1=0, worker-2=0" in text, text[-3000:]
    # front to back: the ingest had flushed to Kafka before the processor was stopped, and the
    # processor had committed before the workers were
    order = [text.find(f"drained {role} (") for role in ("ingest", "processor", "worker")]
    assert -1 not in order and order == sorted(order), (order, text[-3000:])
    assert "Traceback" not in text, text
    assert {status for _, status in senders.answered} == {202}

    # The workers settled everything they held before they exited.
    left = Backlog()
    redis_backlog(settings, left)
    assert sum(left.pending_by_consumer.values()) == 0, left.to_dict()

    # What the processor had not reached yet is still in Kafka: the next start stores it.
    with running_pipeline(settings, log_path=tmp_path / "restart.log", start_stack=False):
        wait_drained(settings, timeout=90)
    acknowledged = [*senders.acknowledged(), held.body["scanId"]]
    check = verify_scan_ids(db_url, acknowledged)
    assert (check.stored, check.missing, check.duplicate_rows) == (len(acknowledged), 0, 0)
    # A request without an answer may only be one the server never took: stored means it was
    # accepted and then reset, an acknowledgement lost.
    unanswered = [scan_id for scan_id, _ in senders.failed]
    assert verify_scan_ids(db_url, unanswered).stored == 0, senders.failed
    migrate.drop_database(db_url)
