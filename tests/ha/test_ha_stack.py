"""The ha profile's real servers: 3 KRaft nodes, Redis primary + 2 replicas + 3 Sentinels, MariaDB,
each in its own network namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from confluent_kafka import admin as kafka_admin

from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.manager import StackManager
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import StackError

pytestmark = pytest.mark.integration


def test_every_node_is_healthy_with_a_role(ha_stack: HaStackManager) -> None:
    statuses = {s.name: s for s in ha_stack.status()}
    assert len(statuses) == 11  # 3 brokers, 3 Redis, 3 Sentinels, MariaDB, HAProxy
    assert all(s.healthy for s in statuses.values()), statuses
    kafka = [statuses[f"kafka-{i}"].detail for i in (1, 2, 3)]
    assert sum("active controller" in d for d in kafka) == 1, kafka
    assert all("leads" in d for d in kafka)
    redis_roles = [statuses[f"redis-{i}"].detail for i in (1, 2, 3)]
    assert sum("primary" in d for d in redis_roles) == 1 and sum("replica of" in d for d in redis_roles) == 2
    assert all(s.address.startswith("10.") for s in statuses.values())  # never loopback
    assert statuses["haproxy"].detail.count("DOWN") == 2  # no app host runs: both backends out


def test_internal_topics_are_replicated_and_unclean_election_is_off(ha_settings: Settings) -> None:
    admin = kafka_admin.AdminClient({"bootstrap.servers": ha_settings.kafka.bootstrap})
    meta = admin.list_topics(timeout=10)
    assert sorted(meta.brokers) == [1, 2, 3]
    offsets = meta.topics["__consumer_offsets"].partitions.values()
    assert offsets and all(len(p.replicas) == 3 for p in offsets)
    broker = kafka_admin.ConfigResource("broker", "1")  # type: ignore[attr-defined]
    config = admin.describe_configs([broker])[broker].result(10)
    assert config["min.insync.replicas"].value == "2"
    assert config["unclean.leader.election.enable"].value == "false"


def test_a_write_on_the_primary_reaches_both_replicas(ha_stack: HaStackManager) -> None:
    sentinel = redis.Redis(host=ha_stack.topology.node("s", 1).ip, port=26379, decode_responses=True)
    host, port = sentinel.sentinel_get_master_addr_by_name(ha_stack.settings.redis.service)
    primary = redis.Redis(host=host, port=int(port))
    primary.set("bp-test:ha-replication", "1")
    assert primary.wait(2, 5000) == 2
    assert primary.config_get("min-replicas-to-write") == {"min-replicas-to-write": "1"}


def test_single_profile_refuses_the_ha_state_dir(ha_stack: HaStackManager) -> None:
    with pytest.raises(StackError, match="holds data of the 'ha' profile"):
        StackManager(ha_stack.settings.updated({"stack_profile": "single"})).up(quiet=True)


def test_namespaces_in_use_by_another_ha_stack_are_refused_in_one_line(
    ha_stack: HaStackManager, tmp_path: Path
) -> None:
    other = tmp_path / "other-ha"
    env = {**os.environ, "BP_STATE_DIR": str(other), "BP_HA_SUBNET": ha_stack.settings.ha_subnet}
    result = subprocess.run(
        [sys.executable, "-m", "barcode_pipeline", "stack", "up", "--profile", "ha"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use: namespace bpk1" in lines[0], result.stderr
    assert not (other / "network.json").exists()
