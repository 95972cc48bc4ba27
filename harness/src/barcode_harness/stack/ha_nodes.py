"""The ``ha`` profile's nodes, each in a network namespace of its own, and the files they start from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.kafka import KafkaComponent, broker_properties, override
from barcode_harness.stack.mariadb import MariaDBComponent
from barcode_harness.stack.netns import NetNode
from barcode_harness.stack.redis import MEMORY_CONF, RedisComponent, listen_conf, server_conf
from barcode_harness.stack.topology import (
    APP_IDS,
    CONTROLLER_PORT,
    KAFKA_PORT,
    MARIADB_PORT,
    NODE_IDS,
    NODES,
    REDIS_PORT,
    SENTINEL_PORT,
    Topology,
)
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.errors import StackError


def client_settings(settings: HarnessSettings) -> HarnessSettings:
    """``settings`` pointed at the ha profile's nodes: what services and tests connect with."""
    topo = Topology(settings.ha_subnet)
    db = parse_db_url(settings.db.url)
    return settings.updated(
        {
            "stack_profile": "ha",
            "kafka_bootstrap": topo.bootstrap,
            "redis_url": f"redis://{topo.node('r', 1).ip}:{REDIS_PORT}/0",
            "redis_sentinels": topo.sentinels,
            "redis_min_replicas": NODES - 1,
            "topic_replication": NODES,
            "db_url": f"mysql://{db.user}:{db.password}@{topo.node('db').ip}:{MARIADB_PORT}/{db.database}",
        }
    )


def render_kafka_node_properties(topo: Topology, node_id: int, data_dir: Path) -> str:
    """The single broker's properties, made one voter of three whose topics are replicated: an
    acknowledged (acks=all) write is on at least 2 of 3 brokers; no out-of-sync replica may lead."""
    ip = topo.node("k", node_id).ip
    changes: dict[str, object] = {
        "node.id": node_id,
        "controller.quorum.voters": None,  # a dynamic quorum: bootstrap servers only
        "controller.quorum.bootstrap.servers": topo.addresses("k", CONTROLLER_PORT),
        "advertised.listeners": f"PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}",
        "min.insync.replicas": 2,
        "unclean.leader.election.enable": "false",
        "transaction.state.log.min.isr": 2,
        "share.coordinator.state.topic.min.isr": 2,
        "replica.lag.time.max.ms": 10000,
        "num.io.threads": 2,
    }
    for key in ("default", "offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
        changes[f"{key}.replication.factor"] = NODES
    text = broker_properties(ip, KAFKA_PORT, CONTROLLER_PORT, data_dir).replace(
        "barcode-pipeline;", "barcode-pipeline (ha profile);"
    )
    return override(text, changes)


class HaKafkaNode(KafkaComponent):
    """One combined broker+controller of the 3-voter quorum, in namespace ``bpk<i>``."""

    start_timeout = 150.0
    health_replication = NODES
    jvm_flags = ("-XX:ParallelGCThreads=1", "-XX:CICompilerCount=2")  # 3 JVMs share 2 cores
    net: NetNode

    def __init__(self, settings: HarnessSettings, node_id: int, topo: Topology) -> None:
        self.name = f"kafka-{node_id}"
        self.net = topo.node("k", node_id)
        super().__init__(settings.updated({"kafka_bootstrap": f"{self.net.ip}:{KAFKA_PORT}"}))
        self.node_id = node_id
        self.topo = topo
        self.heap = settings.ha_kafka_heap

    @property
    def bootstrap(self) -> str:
        return self.topo.bootstrap

    def properties(self) -> str:
        return render_kafka_node_properties(self.topo, self.node_id, self.data_dir)

    def format_args(self) -> list[str]:
        """Every voter is formatted with the same --initial-controllers: a 3-voter dynamic quorum."""
        quorum = json.loads((self.settings.state_dir.resolve() / "kafka-quorum.json").read_text())
        dirs = quorum["directories"]
        voters = ",".join(
            f"{i}@{self.topo.node('k', i).ip}:{CONTROLLER_PORT}:{dirs[str(i)]}" for i in NODE_IDS
        )
        return [f"--cluster-id={quorum['cluster_id']}", f"--initial-controllers={voters}"]

    def quorum_state(self) -> tuple[int, int] | None:
        """(leader id, epoch) of the metadata quorum as this node last recorded it."""
        try:
            state = json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
            return int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
        except (OSError, ValueError, TypeError):
            return None


def render_ha_redis_conf(settings: HarnessSettings, home: Path, ip: str, primary_ip: str | None) -> str:
    replica = f"replicaof {primary_ip} {REDIS_PORT}\n" if primary_ip else ""
    return f"""# Rendered by barcode-pipeline (ha profile) on first start; Sentinel rewrites it on failover.
{server_conf(settings, home, ip, REDIS_PORT, protected=False)}
{MEMORY_CONF}
# A primary that no replica has acknowledged for 5s refuses writes (NOREPLICAS): an
# isolated old primary cannot take writes for long.
min-replicas-to-write 1
min-replicas-max-lag 5
replica-read-only yes
replica-serve-stale-data yes
repl-diskless-sync yes
# No 5 s wait for more replicas before a full sync: after a failover the new primary refuses
# writes (min-replicas-to-write) until a replica has synced.
repl-diskless-sync-delay 0
{replica}"""


class HaRedisNode(RedisComponent):
    """A Redis server in namespace ``bpr<i>``; node 1 starts as the primary."""

    net: NetNode
    keep_conf = True  # after its first start, Sentinel's failovers rewrite its replicaof

    def __init__(self, settings: HarnessSettings, index: int, topo: Topology) -> None:
        self.name = f"redis-{index}"
        self.net = topo.node("r", index)
        self.primary_ip = None if index == 1 else topo.node("r", 1).ip
        super().__init__(settings.updated({"redis_url": f"redis://{self.net.ip}:{REDIS_PORT}/0"}))

    def render(self) -> str:
        return render_ha_redis_conf(self.settings, self.home, self.net.ip, self.primary_ip)

    def role(self) -> str:
        with self.client() as c:
            info: dict[str, Any] = c.info("replication")
        if info.get("role") == "master":
            return f"primary, {info.get('connected_slaves', 0)} replicas connected"
        return f"replica of {info.get('master_host')} (link {info.get('master_link_status')})"


def render_sentinel_conf(home: Path, ip: str, primary_ip: str, service: str) -> str:
    return f"""# Rendered by barcode-pipeline (ha profile) on first start; Sentinel rewrites it itself.
{listen_conf(home, ip, SENTINEL_PORT, protected=False, pidfile="sentinel.pid")}
sentinel resolve-hostnames no
sentinel monitor {service} {primary_ip} {REDIS_PORT} 2
sentinel down-after-milliseconds {service} 2000
sentinel failover-timeout {service} 10000
sentinel parallel-syncs {service} 1
"""


class HaSentinel(RedisComponent):
    """A Redis Sentinel (Debian's ``redis-sentinel``) in namespace ``bps<i>``. A RedisComponent for its
    start, stop and client; its ``settings.redis.url`` names this Sentinel, not a Redis server."""

    binary = "redis-sentinel"
    marker = binary
    conf_name = "sentinel.conf"
    keep_conf = True  # Sentinel records what it learns (primary, peers) in its config
    net: NetNode

    def __init__(self, settings: HarnessSettings, index: int, topo: Topology) -> None:
        self.name = f"sentinel-{index}"
        self.net = topo.node("s", index)
        self.primary_ip = topo.node("r", 1).ip
        super().__init__(settings.updated({"redis_url": f"redis://{self.net.ip}:{SENTINEL_PORT}/0"}))

    def render(self) -> str:
        return render_sentinel_conf(self.home, self.net.ip, self.primary_ip, self.settings.redis.service)

    def _master(self) -> Any:
        """What this Sentinel knows of the primary."""
        with self.client() as c:
            return c.sentinel_master(self.settings.redis.service)

    def check(self) -> None:
        if not self._master().get("ip"):
            raise StackError("does not know the primary yet", component=self.name)

    def role(self) -> str:
        master = self._master()
        return (
            f"sentinel: primary {master.get('ip')}:{master.get('port')}, "
            f"{master.get('num-other-sentinels', 0)} other sentinels"
        )


class HaMariaDB(MariaDBComponent):
    """The one MariaDB, in namespace ``bpdb`` (the remaining single point of the ha profile)."""

    net: NetNode

    def __init__(self, settings: HarnessSettings, topo: Topology) -> None:
        self.net = topo.node("db")
        # The services connect from the host's bridge address and from the app hosts, not loopback.
        self.client_hosts = (*self.client_hosts, topo.host_ip, *(topo.node("app", i).ip for i in APP_IDS))
        super().__init__(client_settings(settings))
