"""The ha profile's pure parts: addresses, rendered configs, the profile guard (no servers)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import profile
from barcode_harness.stack.ha_nodes import (
    client_settings,
    render_ha_redis_conf,
    render_kafka_node_properties,
    render_sentinel_conf,
)
from barcode_harness.stack.haproxy import render_haproxy_cfg
from barcode_harness.stack.topology import Topology, check_subnet
from barcode_pipeline import names
from barcode_pipeline.errors import ConfigError, StackError


def test_topology_gives_every_node_its_own_address_and_bp_names() -> None:
    topo = Topology("10.9.8.0/24")
    nodes = topo.all_nodes()
    assert len({n.ip for n in nodes}) == len(nodes) == 13  # 3+3+3 servers, MariaDB, HAProxy, 2 app hosts
    assert all(n.namespace.startswith("bp") and n.veth.startswith("bp") for n in nodes)
    assert all(len(n.veth) <= 15 for n in nodes)  # the kernel's interface name limit
    assert topo.bootstrap == "10.9.8.11:9092,10.9.8.12:9092,10.9.8.13:9092"
    assert topo.sentinels.count(":26379") == 3
    assert [topo.node("app", i).namespace for i in (1, 2)] == ["bpapp1", "bpapp2"]


def test_haproxy_checks_ready_on_both_app_hosts(tmp_path: Path) -> None:
    cfg = render_haproxy_cfg("10.9.8.50", 8081, [("app1", "10.9.8.51"), ("app2", "10.9.8.52")],
                             tmp_path / "admin.sock")  # fmt: skip
    assert "bind 10.9.8.50:8081" in cfg
    assert f"option httpchk GET {names.ROUTE_READY}" in cfg
    assert "server app1 10.9.8.51:8081 check" in cfg and "server app2 10.9.8.52:8081 check" in cfg
    # the app hosts believe X-Forwarded-For from the balancer: it must hold the client, not what it wrote
    frontend = cfg.split("frontend ingest", 1)[1].split("backend ", 1)[0]
    assert frontend.index("http-request del-header X-Forwarded-For") < frontend.index("option forwardfor")
    (tmp_path / "haproxy.cfg").write_text(cfg)
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    assert haproxy, "haproxy not found: run scripts/setup.sh"
    checked = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True,
                             text=True, timeout=30, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_kafka_node_is_one_voter_of_three_with_replicated_topics(tmp_path: Path) -> None:
    text = render_kafka_node_properties(Topology("10.9.8.0/24"), 2, tmp_path)
    assert "node.id=2" in text
    assert "controller.quorum.bootstrap.servers=10.9.8.11:9093,10.9.8.12:9093,10.9.8.13:9093" in text
    assert "controller.quorum.voters" not in text  # a dynamic quorum: bootstrap servers only
    assert "listeners=PLAINTEXT://10.9.8.12:9092,CONTROLLER://10.9.8.12:9093" in text
    for line in ("default.replication.factor=3", "min.insync.replicas=2",
                 "unclean.leader.election.enable=false", "offsets.topic.replication.factor=3",
                 "transaction.state.log.replication.factor=3"):  # fmt: skip
        assert line in text


def test_redis_replica_and_sentinel_configs(tmp_path: Path) -> None:
    primary = render_ha_redis_conf(HarnessSettings(), tmp_path, "10.9.8.21", None)
    replica = render_ha_redis_conf(HarnessSettings(), tmp_path, "10.9.8.22", "10.9.8.21")
    assert "replicaof" not in primary and "replicaof 10.9.8.21 6379" in replica
    for text in (primary, replica):
        assert "appendonly yes" in text and "min-replicas-to-write 1" in text
    sentinel = render_sentinel_conf(tmp_path, "10.9.8.31", "10.9.8.21", "svc")
    assert "sentinel monitor svc 10.9.8.21 6379 2" in sentinel


def test_client_settings_point_at_brokers_sentinels_and_wait_for_all_replicas() -> None:
    s = client_settings(HarnessSettings(ha_subnet="10.9.8.0/24"))
    assert s.kafka.bootstrap.count(",") == 2 and s.redis.sentinels.count(",") == 2
    assert s.redis.min_replicas == 2 and s.kafka.topic_replication == 3
    assert s.db.url.startswith("mysql://barcode:barcode@10.9.8.40:3306/")


def test_one_profile_never_starts_over_the_others_data(tmp_path: Path) -> None:
    profile.claim(tmp_path, "ha")
    profile.claim(tmp_path, "ha")  # the same profile again is fine
    with pytest.raises(StackError, match=r"holds data of the 'ha' profile.*--profile ha"):
        profile.claim(tmp_path, "single")
    legacy = tmp_path / "old"
    (legacy / "kafka").mkdir(parents=True)  # written before profiles existed: single-node
    assert profile.recorded(legacy) == "single"


@pytest.mark.parametrize("subnet", ["10.1.2.0/28", "not-a-net", "fd00::/64"])
def test_an_unusable_subnet_is_a_config_error(subnet: str) -> None:
    with pytest.raises(ConfigError, match="BP_HA_SUBNET"):
        check_subnet(subnet)
