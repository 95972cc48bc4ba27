"""The ``ha`` profile's nodes: KRaft brokers, Redis primary and replicas, Sentinels, MariaDB, each
in a network namespace of its own (stack/netns.py), and the configuration files they start from.
stack/ha.py brings them up together.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pymysql
import redis
from confluent_kafka.admin import AdminClient

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component
from barcode_harness.stack.kafka import KafkaComponent, render_log4j2
from barcode_harness.stack.mariadb import MariaDBComponent
from barcode_harness.stack.redis import MEMORY_CONF, RedisComponent, files_conf
from barcode_harness.stack.topology import (
    APP_HOSTS,
    CONTROLLER_PORT,
    KAFKA_PORT,
    MARIADB_PORT,
    NODES,
    REDIS_PORT,
    SENTINEL_PORT,
    Topology,
)
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.errors import MissingPrerequisite, StackError

log = logging.getLogger(__name__)

SENTINEL_QUORUM = 2
SENTINEL_DOWN_AFTER_MS = 2000
SENTINEL_FAILOVER_TIMEOUT_MS = 10_000
MIN_REPLICAS_MAX_LAG_S = 5


def client_settings(settings: HarnessSettings) -> HarnessSettings:
    """``settings`` pointed at the ha profile's nodes: what services and tests connect with."""
    topo = Topology(settings.ha_subnet)
    db = parse_db_url(settings.db.url)
    return settings.updated(
        {
            "stack_profile": "ha",
            "kafka_bootstrap": topo.bootstrap,
            "redis_url": f"redis://{topo.redis(1).ip}:{REDIS_PORT}/0",
            "redis_sentinels": topo.sentinels,
            "redis_min_replicas": NODES - 1,
            "topic_replication": NODES,
            "db_url": f"mysql://{db.user}:{db.password}@{topo.mariadb().ip}:{MARIADB_PORT}/{db.database}",
        }
    )


# ---------------------------------------------------------------------------------------- Kafka
def render_kafka_node_properties(topo: Topology, node_id: int, data_dir: Path) -> str:
    ip = topo.kafka(node_id).ip
    quorum = ",".join(f"{topo.kafka(i).ip}:{CONTROLLER_PORT}" for i in range(1, NODES + 1))
    return f"""# Rendered by barcode-pipeline (ha profile); edits are overwritten on the next `stack up`.
process.roles=broker,controller
node.id={node_id}
controller.quorum.bootstrap.servers={quorum}
listeners=PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://{ip}:{KAFKA_PORT},CONTROLLER://{ip}:{CONTROLLER_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
auto.create.topics.enable=false
num.partitions=1
# An acknowledged (acks=all) write is on at least 2 of 3 brokers; no out-of-sync replica may lead.
default.replication.factor={NODES}
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor={NODES}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={NODES}
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor={NODES}
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=1000
replica.lag.time.max.ms=10000
log.retention.hours=168
num.network.threads=2
num.io.threads=2
"""


class HaKafkaNode(KafkaComponent):
    """One combined broker+controller of the 3-voter quorum, in namespace ``bpk<i>``."""

    start_timeout = 150.0
    health_replication = NODES

    def __init__(self, settings: HarnessSettings, node_id: int, topo: Topology) -> None:
        self.name = f"kafka-{node_id}"
        super().__init__(settings)
        self.node_id = node_id
        self.topo = topo
        self.net = topo.kafka(node_id)

    @property
    def address(self) -> str:
        return f"{self.net.ip}:{KAFKA_PORT}"

    @property
    def bootstrap(self) -> str:
        return self.topo.bootstrap

    @property
    def quorum_file(self) -> Path:
        return self.settings.state_dir.resolve() / "kafka-quorum.json"

    def prepare(self) -> None:
        java = self._java()
        self.ensure_jars()
        self.make_dirs()
        props = self.home / "server.properties"
        props.write_text(render_kafka_node_properties(self.topo, self.node_id, self.data_dir))
        (self.home / "log4j2.properties").write_text(render_log4j2(self.home / "logs"))
        if (self.data_dir / "meta.properties").exists():
            return
        quorum = json.loads(self.quorum_file.read_text())
        voters = ",".join(
            f"{i}@{self.topo.kafka(i).ip}:{CONTROLLER_PORT}:{quorum['directories'][str(i)]}"
            for i in range(1, NODES + 1)
        )
        # Every voter is formatted with the same --initial-controllers: a 3-voter dynamic quorum.
        cmd = [java, "-cp", f"{self.jar_dir}/*", "kafka.tools.StorageTool", "format",
               f"--cluster-id={quorum['cluster_id']}", "-c", str(props),
               f"--initial-controllers={voters}", "--ignore-formatted"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"storage format failed: {result.stdout}{result.stderr}"[-500:],
                             component=self.name)  # fmt: skip

    def argv(self) -> list[str]:
        heap = self.settings.ha_kafka_heap
        return [
            *self.net.exec_prefix(), self._java(),
            f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:ParallelGCThreads=1", "-XX:CICompilerCount=2",  # 3 JVMs share 2 cores
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{self.jar_dir}/*", "kafka.Kafka", str(self.home / "server.properties"),
        ]  # fmt: skip

    def check(self) -> None:
        """This node listens and is a registered broker; then a round trip through the cluster."""
        with socket.create_connection((self.net.ip, KAFKA_PORT), timeout=2):
            pass
        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        brokers = admin.list_topics(timeout=3).brokers
        if self.node_id not in brokers:
            raise StackError("not registered with the cluster yet", component=self.name)
        super().check()

    def quorum_state(self) -> tuple[int, int] | None:
        """(leader id, epoch) of the metadata quorum as this node last recorded it."""
        try:
            state = json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
            return int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
        except (OSError, ValueError, TypeError):
            return None


# ---------------------------------------------------------------------------------------- Redis
def render_ha_redis_conf(settings: HarnessSettings, home: Path, ip: str, primary_ip: str | None) -> str:
    replica = f"replicaof {primary_ip} {REDIS_PORT}\n" if primary_ip else ""
    return f"""# Rendered by barcode-pipeline (ha profile) on first start; Sentinel rewrites it on failover.
bind {ip}
port {REDIS_PORT}
protected-mode no
daemonize no
{files_conf(settings, home)}
save ""
{MEMORY_CONF}
# A primary that no replica has acknowledged for {MIN_REPLICAS_MAX_LAG_S}s refuses writes (NOREPLICAS): an
# isolated old primary cannot take writes for long.
min-replicas-to-write 1
min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_S}
replica-read-only yes
replica-serve-stale-data yes
repl-diskless-sync yes
# No 5 s wait for more replicas before a full sync: after a failover the new primary refuses
# writes (min-replicas-to-write) until a replica has synced.
repl-diskless-sync-delay 0
{replica}"""


class HaRedisNode(RedisComponent):
    """A Redis server in namespace ``bpr<i>``; node 1 starts as the primary."""

    def __init__(self, settings: HarnessSettings, index: int, topo: Topology) -> None:
        self.name = f"redis-{index}"
        self.net = topo.redis(index)
        self.primary_ip = None if index == 1 else topo.redis(1).ip
        super().__init__(settings.updated({"redis_url": f"redis://{self.net.ip}:{REDIS_PORT}/0"}))

    def prepare(self) -> None:
        self.make_dirs("data")
        conf = self.home / "redis.conf"
        if not conf.exists():  # afterwards Sentinel owns the replicaof line
            conf.write_text(render_ha_redis_conf(self.settings, self.home, self.net.ip, self.primary_ip))

    def argv(self) -> list[str]:
        return [*self.net.exec_prefix(), *super().argv()]

    def role(self) -> str:
        client = redis.Redis(host=self.net.ip, port=REDIS_PORT, socket_timeout=2, decode_responses=True)
        try:
            info: dict[str, Any] = client.info("replication")
        finally:
            client.close()
        if info.get("role") == "master":
            return f"primary, {info.get('connected_slaves', 0)} replicas connected"
        return f"replica of {info.get('master_host')} (link {info.get('master_link_status')})"


def render_sentinel_conf(home: Path, ip: str, primary_ip: str, service: str) -> str:
    return f"""# Rendered by barcode-pipeline (ha profile) on first start; Sentinel rewrites it itself.
bind {ip}
port {SENTINEL_PORT}
protected-mode no
daemonize no
dir {home / "data"}
pidfile {home / "sentinel.pid"}
logfile {home / "logs" / "server.log"}
sentinel resolve-hostnames no
sentinel monitor {service} {primary_ip} {REDIS_PORT} {SENTINEL_QUORUM}
sentinel down-after-milliseconds {service} {SENTINEL_DOWN_AFTER_MS}
sentinel failover-timeout {service} {SENTINEL_FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs {service} 1
"""


class HaSentinel(Component):
    """A Redis Sentinel (Debian's ``redis-sentinel``) in namespace ``bps<i>``."""

    stdout_name = "stdout.log"  # the server writes its own log file
    start_timeout = 30.0
    marker = "redis-sentinel"

    def __init__(self, settings: HarnessSettings, index: int, topo: Topology) -> None:
        self.name = f"sentinel-{index}"
        super().__init__(settings)
        self.net = topo.sentinel(index)
        self.primary_ip = topo.redis(1).ip

    @property
    def address(self) -> str:
        return f"{self.net.ip}:{SENTINEL_PORT}"

    def prepare(self) -> None:
        self.make_dirs("data")
        conf = self.home / "sentinel.conf"
        if not conf.exists():
            conf.write_text(render_sentinel_conf(self.home, self.net.ip, self.primary_ip,
                                                 self.settings.redis.service))  # fmt: skip

    def argv(self) -> list[str]:
        binary = shutil.which("redis-sentinel") or shutil.which("redis-sentinel", path="/usr/bin:/usr/sbin")
        if not binary:
            raise MissingPrerequisite("redis-sentinel not found; install it with: apt-get install -y "
                                      "redis-sentinel", component=self.name)  # fmt: skip
        return [*self.net.exec_prefix(), binary, str(self.home / "sentinel.conf")]

    def _client(self) -> redis.Redis:
        return redis.Redis(host=self.net.ip, port=SENTINEL_PORT, socket_timeout=2, decode_responses=True)

    def check(self) -> None:
        client = self._client()
        try:
            if not client.sentinel_get_master_addr_by_name(self.settings.redis.service):
                raise StackError("does not know the primary yet", component=self.name)
        finally:
            client.close()

    def role(self) -> str:
        client = self._client()
        try:
            master: Any = client.sentinel_master(self.settings.redis.service)
        finally:
            client.close()
        return (
            f"sentinel: primary {master.get('ip')}:{master.get('port')}, "
            f"{master.get('num-other-sentinels', 0)} other sentinels"
        )


# -------------------------------------------------------------------------------------- MariaDB
class HaMariaDB(MariaDBComponent):
    """The one MariaDB, in namespace ``bpdb`` (the remaining single point of the ha profile)."""

    def __init__(self, settings: HarnessSettings, topo: Topology, host_ip: str) -> None:
        self.net = topo.mariadb()
        self.host_ip = host_ip
        super().__init__(client_settings(settings))

    def argv(self) -> list[str]:
        return [*self.net.exec_prefix(), *super().argv()]

    def after_start(self) -> None:
        """The services connect from the host's bridge address and from the app hosts, not loopback."""
        super().after_start()
        t = parse_db_url(self.settings.db.url)
        topo = Topology(self.settings.ha_subnet)
        conn = self._root()
        try:
            with conn.cursor() as cur:
                for ip in (self.host_ip, *(topo.app(i).ip for i in range(1, APP_HOSTS + 1))):
                    cur.execute(f"CREATE USER IF NOT EXISTS %s@'{ip}' IDENTIFIED BY %s", (t.user, t.password))
                    cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO %s@'{ip}'", (t.user,))
            conn.commit()
        finally:
            conn.close()

    def check(self) -> None:
        try:
            super().check()
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1130:  # host not allowed yet: before after_start
                conn = self._root()
                conn.close()
                return
            raise
