"""Monitoring against the real stack: a short load, then every Grafana panel's PromQL must return data.

The stack runs with Prometheus and its exporters (``stack up --monitoring``); the pipeline runs as
``run`` starts it (every service on its metrics port, the backlog exporter in this process), plus
the legacy service, so its pool panels have series too. Grafana itself is not installable here.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import pytest
import redis

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.manager import StackManager
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.db import migrate
from barcode_pipeline.monitoring import dashboards
from barcode_pipeline.monitoring.exporter import serve
from barcode_pipeline.monitoring.top import run_top
from barcode_pipeline.run.pipeline import running_pipeline
from barcode_pipeline.run.supervisor import ChildSpec, pipeline_specs
from tests.conftest import keyed
from tests.kafka_helpers import start_group_at_log_end

pytestmark = pytest.mark.integration

DEVICES = ("SEOUL-CENTER-PC-001", "SEOUL-CENTER-PC-002", "SEOUL-CENTER-PC-003")
DISK_ALERTS = {"BarcodeDiskSpaceLow", "BarcodeDiskSpaceCritical"}
THROUGHPUT_PANELS = {"Throughput per stage (scans/s)", "Ingest rate by endpoint and status", "Worker rows/s"}


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


@pytest.fixture(scope="module")
def monitored(
    stack_settings: HarnessSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HarnessSettings]:
    db_url = migrate.database_url(stack_settings.db.url, "bp_test_monitoring")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    settings = stack_settings.updated(
        {
            "db_url": db_url,
            "redis_url": _redis_db(stack_settings.redis.url, 11),
            "ingest_processes": 1,
            "worker_max_delay_ms": 100,
            "processor_group": f"test-monitoring-{uuid.uuid4().hex[:8]}",
            "exporter_interval_s": 1.0,
        }
    )
    settings = keyed(settings, "test-monitoring")
    StackManager(settings, monitoring=True).up(quiet=True)  # (re)renders the scrape config for these settings
    redis.Redis.from_url(settings.redis.url).flushdb()
    start_group_at_log_end(settings, settings.processor.group)
    specs = [*pipeline_specs(settings, metrics=True), ChildSpec("legacy", names.Role.LEGACY, ["legacy"])]
    log = tmp_path_factory.mktemp("monitoring") / "pipeline.log"
    collector, server = serve(settings)
    try:
        with running_pipeline(
            settings,
            log_path=log,
            specs=specs,
            start_stack=False,
            health_port=settings.monitoring.metrics_port_base,
        ):
            yield settings  # ready: running_pipeline waited for ingest's and legacy's /ready
    finally:
        collector.stop()
        server.shutdown()
        migrate.drop_database(db_url)


class Load(threading.Thread):
    """Singles, batches and resends to ingest, singles to legacy, until stopped."""

    def __init__(self, settings: HarnessSettings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.stop = threading.Event()
        self.accepted = 0
        self.failures = 0

    def run(self) -> None:
        ingest = f"http://127.0.0.1:{self.settings.ingest.port}"
        legacy = f"http://127.0.0.1:{self.settings.legacy.port}"
        headers = {"content-type": "application/json", **client_headers(self.settings.ingest_api_key)}
        with httpx.Client(timeout=10, headers=headers) as client:
            i = 0
            while not self.stop.is_set():
                try:
                    i += 1
                    self._send(client, ingest, legacy, i)
                except httpx.HTTPError:
                    self.failures += 1  # counted, not fatal: the panels still need traffic
                time.sleep(0.01)

    def _send(self, client: httpx.Client, ingest: str, legacy: str, i: int) -> None:
        scan = {"barcode": f"880{i:010d}", "deviceId": DEVICES[i % 3],
                "scanTime": int(time.time() * 1000), "scanId": f"mon-{uuid.uuid4().hex}"}  # fmt: skip
        for _ in range(2 if i % 5 == 0 else 1):  # every fifth scan resent: a dedup hit
            if client.post(f"{ingest}/ingest/barcode", content=orjson.dumps(scan)).status_code == 202:
                self.accepted += 1
        if i % 10 == 0:
            batch = [{**scan, "scanId": f"{scan['scanId']}-{j}"} for j in range(5)]
            client.post(f"{ingest}/ingest/barcodes", content=orjson.dumps(batch))
            client.post(f"{legacy}/ingest/barcode", content=orjson.dumps({**scan, "scanId": f"l{i}"}))


@pytest.fixture(scope="module")
def load(monitored: HarnessSettings) -> Iterator[Load]:
    worker = Load(monitored)
    worker.start()
    yield worker
    worker.stop.set()
    worker.join(15)


def test_top_shows_the_live_pipeline(monitored: HarnessSettings, load: Load) -> None:
    deadline = time.monotonic() + 60
    while load.accepted < 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    view = run_top(monitored, refresh_s=0.5, iterations=8)
    assert {name: up for name, up in view.services.items()} == dict.fromkeys(view.services, True)
    ingest, processor, workers = view.stages
    assert ingest.rate_out and processor.rate_out and workers.rate_out
    assert view.ingest_p99_ms is not None and view.freshness_p99_s is not None
    assert not [w for w in view.warnings if "not answering" in w or "missing" in w]


def test_every_dashboard_panel_returns_series(monitored: HarnessSettings, load: Load) -> None:
    base = f"http://127.0.0.1:{monitored.monitoring.prometheus_port}"
    queries = [q for path in dashboards.dashboard_files() for q in dashboards.panel_queries(path)]
    assert len(queries) >= 40
    # Rates need two scrapes with traffic; wait for data, without a fixed sleep.
    deadline = time.monotonic() + 180
    while True:
        results = [dashboards.check(base, q) for q in queries]
        errors = [r for r in results if r.error]
        assert not errors, [(r.query.panel, r.query.promql, r.error) for r in errors]
        empty = [r for r in results if r.series == 0]
        if not empty:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"panels without data: {[(r.query.panel, r.query.promql) for r in empty]}")
        time.sleep(2)
    # Every Prometheus target the dashboards rely on is up (legacy included: it runs here).
    body = dashboards.instant_query(base, "up == 0")
    assert body["data"]["result"] == [], body["data"]["result"]
    # A series is not traffic: the throughput panels must show a finite rate above zero after the load.
    while True:
        results = [dashboards.check(base, q) for q in queries if q.panel in THROUGHPUT_PANELS]
        flat = [(r.query.panel, r.query.promql) for r in results if r.nonzero == 0]
        if not flat:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"throughput panels flat at zero or NaN after the load: {flat}")
        time.sleep(2)
    assert {r.query.panel for r in results} == THROUGHPUT_PANELS


def test_every_rule_is_healthy_and_reads_only_scraped_metrics(monitored: HarnessSettings, load: Load) -> None:
    """A rule over a misspelt or missing metric is valid PromQL that never fires: hold every rule's
    metric names against what Prometheus scrapes from the real exporters and services."""
    base = f"http://127.0.0.1:{monitored.monitoring.prometheus_port}"
    deadline = time.monotonic() + 120
    while True:
        rules = [r for g in _api(base, "rules")["groups"] for r in g["rules"]]
        scraped = set(_api(base, "label/__name__/values"))
        recorded = {r["name"] for r in rules if r["type"] == "recording"}
        missing = {r["name"]: sorted(dashboards.metric_names(r["query"]) - scraped - recorded) for r in rules}
        missing = {name: names for name, names in missing.items() if names}
        unhealthy = {r["name"]: r.get("lastError") for r in rules if r.get("health") != "ok"}
        if not missing and not unhealthy:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"rules not healthy: {unhealthy}; metrics no target exports: {missing}")
        time.sleep(2)
    assert len([r for r in rules if r["type"] == "alerting"]) >= 16


def test_a_nearly_full_disk_raises_the_disk_alert_naming_its_mount(
    monitored: HarnessSettings, tmp_path: Path
) -> None:
    """A real filesystem (a 16 MiB tmpfs) filled to 98 %: the node exporter's scrape and the rule
    together name that mount in a BarcodeDiskSpaceCritical alert (pending: it fires after 1 m)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={16 * 2**20}", "tmpfs", str(disk)], check=True)
    base = f"http://127.0.0.1:{monitored.monitoring.prometheus_port}"
    try:
        (disk / "ballast").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 300 * 2**10))
        deadline = time.monotonic() + 90
        while True:
            alerts = [a for a in _api(base, "alerts")["alerts"] if a["labels"].get("mountpoint") == str(disk)]
            if {a["labels"]["alertname"] for a in alerts} >= {
                "BarcodeDiskSpaceLow",
                "BarcodeDiskSpaceCritical",
            }:
                break
            assert time.monotonic() < deadline, f"no disk alert names {disk}: {alerts}"
            time.sleep(2)
        critical = next(a for a in alerts if a["labels"]["alertname"] == "BarcodeDiskSpaceCritical")
        assert str(disk) in critical["annotations"]["summary"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _api(base: str, path: str) -> Any:
    body = httpx.get(f"{base}/api/v1/{path}", timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def test_top_command_exits_cleanly_on_ctrl_c(monitored: HarnessSettings) -> None:
    import os
    import signal
    import subprocess
    import sys

    from barcode_pipeline.config import settings_env

    env = {**os.environ, **settings_env(monitored), "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "barcode_pipeline", "top", "--refresh", "0.5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("kafka lag" in line for line in list(seen)) and time.monotonic() < deadline:
            assert proc.poll() is None, "top exited on its own"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=30)
        reader.join(10)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert any("kafka lag" in line for line in seen)


def test_snapshot_png_from_prometheus(monitored: HarnessSettings, load: Load, tmp_path: Path) -> None:
    from barcode_harness.snapshot import PANELS, snapshot

    base = f"http://127.0.0.1:{monitored.monitoring.prometheus_port}"
    wanted = sum(len(queries) for _, queries in PANELS)
    deadline = time.monotonic() + 120
    while True:
        png, with_data = snapshot(base, tmp_path / "snap.png", minutes=5)
        if with_data >= wanted or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert with_data >= wanted
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
