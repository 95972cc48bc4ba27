"""``barcode-pipeline run`` as users start it: every service answers /metrics on its documented port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.monitoring.targets import pipeline_targets
from tests.kafka_helpers import start_group_at_log_end

pytestmark = pytest.mark.integration


def answers(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body: bytes = resp.read()
            return body.decode()
    except (urllib.error.URLError, OSError):
        return None


def test_run_serves_metrics_on_every_documented_port(stack_settings: Settings) -> None:
    db_url = migrate.database_url(stack_settings.db.url, "bp_test_run_metrics")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    parts = urlsplit(stack_settings.redis.url)
    settings = stack_settings.updated(
        {
            "db_url": db_url,
            "redis_url": urlunsplit((parts.scheme, parts.netloc, "/10", "", "")),
            "ingest_processes": 1,
            "processor_group": f"test-run-metrics-{uuid.uuid4().hex[:8]}",
        }
    )
    start_group_at_log_end(settings, settings.processor.group)
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "barcode_pipeline", "run", "--no-stack"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    targets = pipeline_targets(settings, legacy=False)
    try:
        pages: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while len(pages) < len(targets) and time.monotonic() < deadline:
            assert proc.poll() is None, "run exited early"
            for target in targets:
                if target.name not in pages and (text := answers(target.url)) is not None:
                    pages[target.name] = text
            time.sleep(0.5)
        assert sorted(pages) == sorted(t.name for t in targets)
        assert "bp_ingest_request_seconds" in pages["ingest"]
        assert "bp_processor_events_total" in pages["processor"]
        workers = [t.name for t in targets if t.job == "bp-worker"]
        assert workers and all("bp_worker_freshness_seconds" in pages[w] for w in workers)
        assert "bp_backlog_probe_up" in pages["backlog"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        migrate.drop_database(db_url)
    assert proc.returncode == 0, err[-2000:]
