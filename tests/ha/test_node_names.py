"""Two app hosts on one cluster: distinct member ids and consumer names, and a name clash refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from barcode_pipeline import names
from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.run.lease import NodeLease, NodeNameInUse
from barcode_pipeline.run.supervisor import pipeline_specs

pytestmark = pytest.mark.integration


def _members(settings: Settings) -> list[str]:
    """The names each processor and worker registers with Kafka and Redis (the value after the flag)."""
    out = []
    for spec in pipeline_specs(settings, metrics=False):
        for flag in ("--instance", "--name"):
            if flag in spec.args:
                out.append(spec.args[spec.args.index(flag) + 1])
    return out


def test_two_nodes_get_distinct_member_ids_and_consumer_names(ha_settings: Settings) -> None:
    app1 = _members(ha_settings.updated({"node_name": "app1", "processors": 2, "workers": 2}))
    app2 = _members(ha_settings.updated({"node_name": "app2", "processors": 2, "workers": 2}))
    assert len(app1) == len(set(app1)) == 4
    assert not set(app1) & set(app2)
    assert all(m.startswith("app1.") for m in app1)
    assert names.node_member("app2", "worker-1") in app2
    # Stable: a restarted node comes back under the same names (static membership, its own pending).
    assert _members(ha_settings.updated({"node_name": "app1", "processors": 2})) == app1


def _unique(settings: Settings) -> Settings:
    return settings.updated({"node_name": f"t-{uuid.uuid4().hex[:8]}", "node_lease_ttl_s": 2.0})


def test_a_second_run_with_the_same_node_name_is_refused(ha_settings: Settings) -> None:
    settings = _unique(ha_settings)
    first = NodeLease(settings)
    first.acquire()
    try:
        with pytest.raises(NodeNameInUse) as refused:
            NodeLease(settings).acquire()
        message = str(refused.value)
        assert settings.node_name in message and "BP_NODE_NAME" in message and "\n" not in message
        other = NodeLease(settings.updated({"node_name": settings.node_name + "-b"}))
        other.acquire()  # another name on the same cluster is fine
        other.release()
        time.sleep(1.5)  # past the TTL of the first acquire: held only because it is renewed
        with pytest.raises(NodeNameInUse):
            NodeLease(settings).acquire()
    finally:
        first.release()
    again = NodeLease(settings)  # a clean stop frees the name at once
    again.acquire()
    again.release()


def test_a_crashed_nodes_lease_expires_so_it_can_start_again(ha_settings: Settings) -> None:
    settings = _unique(ha_settings)
    crashed = NodeLease(settings)
    crashed.acquire()
    crashed._stop.set()  # the process died: no more renewals, no release
    deadline = time.monotonic() + 30
    while True:
        try:
            NodeLease(settings).acquire()
            break
        except NodeNameInUse:
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.2)


def test_run_refuses_a_node_name_in_use_in_one_line(ha_settings: Settings) -> None:
    settings = _unique(ha_settings).updated({"node_lease_ttl_s": 30.0})
    holder = NodeLease(settings)
    holder.acquire()
    try:
        env = {**os.environ, **settings_env(settings), "BP_LOG_LEVEL": "WARNING"}
        result = subprocess.run(
            [sys.executable, "-m", "barcode_pipeline", "run", "--no-stack"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        holder.release()
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any(settings.node_name in line and "already running" in line for line in lines), lines
    assert "Traceback" not in result.stderr + result.stdout
