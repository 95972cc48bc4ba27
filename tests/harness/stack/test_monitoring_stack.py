"""``stack up --monitoring``: Debian's Prometheus and exporters under the state dir, on the set ports."""

from __future__ import annotations

import json
import urllib.request

import pytest

from barcode_harness.stack.manager import StackManager
from barcode_pipeline.config import Settings

pytestmark = pytest.mark.integration


def test_up_with_monitoring_runs_prometheus_and_exporters(stack_settings: Settings) -> None:
    StackManager(stack_settings, monitoring=True).up(quiet=True)
    plain = StackManager(stack_settings)
    running = {s.name: s for s in plain.monitoring_status()}
    assert set(running) == {"prometheus", "redis-exporter", "mysqld-exporter", "node-exporter"}
    assert all(s.healthy for s in running.values()), running
    assert [s.name for s in plain.status()] == ["kafka", "redis", "mariadb"]
    home = stack_settings.state_dir.resolve() / "prometheus"
    assert (home / "data").is_dir() and (home / "rules" / "alerts.yml").is_file()
    url = f"http://127.0.0.1:{stack_settings.monitoring.prometheus_port}/api/v1/status/config"
    with urllib.request.urlopen(url, timeout=10) as resp:
        loaded = json.loads(resp.read())["data"]["yaml"]
    first_worker = stack_settings.monitoring.metrics_port_base + stack_settings.processor.count + 1
    assert f"127.0.0.1:{first_worker}" in loaded  # the generated targets
    assert f"127.0.0.1:{stack_settings.monitoring.mysqld_exporter_port}" in loaded


def test_a_stopped_prometheus_is_started_again_and_not_reported_meanwhile(stack_settings: Settings) -> None:
    manager = StackManager(stack_settings, monitoring=True)
    manager.up(quiet=True)
    manager.component("prometheus").stop()
    assert "prometheus" not in {s.name for s in StackManager(stack_settings).monitoring_status()}
    manager.up(quiet=True)
    assert "prometheus" in {s.name for s in StackManager(stack_settings).monitoring_status()}
