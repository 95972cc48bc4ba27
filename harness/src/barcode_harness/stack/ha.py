"""The ``ha`` profile: 3 KRaft nodes, a Redis primary with 2 replicas and 3 Sentinels, one MariaDB.

Every node runs in its own network namespace (stack/netns.py) with its own address, so a fault can
kill, pause or cut off one node without touching the others. Kafka topics get RF=3 with
min.insync.replicas=2 (an acknowledged write survives the loss of any one broker); Redis runs with
``min-replicas-to-write 1``, so a primary cut off from both replicas stops taking writes.
MariaDB stays a single server: the remaining single point of this topology (its restart is
covered by the single-node fault suite).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component, ComponentStatus
from barcode_harness.stack.ha_nodes import (
    HaKafkaNode,
    HaMariaDB,
    HaRedisNode,
    HaSentinel,
    client_settings,
)
from barcode_harness.stack.haproxy import HaProxy
from barcode_harness.stack.manager import StackManager
from barcode_harness.stack.netns import Network
from barcode_harness.stack.topology import (
    NODES,
    Topology,
    check_subnet,
)
from barcode_pipeline.errors import StackError

log = logging.getLogger(__name__)

SENTINEL_QUORUM = 2
SENTINEL_DOWN_AFTER_MS = 2000
SENTINEL_FAILOVER_TIMEOUT_MS = 10_000
MIN_REPLICAS_MAX_LAG_S = 5


# -------------------------------------------------------------------------------------- manager
def _kafka_uuid() -> str:
    """A Kafka Uuid (base64 of 16 random bytes); never one starting with '-', which CLIs misread."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class HaStackManager(StackManager):
    """The ha profile's nodes under ``settings.state_dir``, each in its own namespace."""

    profile = "ha"

    def __init__(self, settings: HarnessSettings) -> None:
        check_subnet(settings.ha_subnet)
        self.settings = settings
        self.topology = Topology(settings.ha_subnet)
        self.network = Network(settings.ha_subnet, self.topology.all_nodes(),
                               settings.state_dir.resolve() / "network.json")  # fmt: skip
        rng = range(1, NODES + 1)
        comps: list[Component] = [
            *(HaKafkaNode(settings, i, self.topology) for i in rng),
            *(HaRedisNode(settings, i, self.topology) for i in rng),
            *(HaSentinel(settings, i, self.topology) for i in rng),
            HaMariaDB(settings, self.topology, self.network.host_ip),
            HaProxy(settings, self.topology),
        ]
        self.components = {c.name: c for c in comps}
        self.monitoring: dict[str, Component] = {}  # `stack up --monitoring` is for the single profile
        self.secure = None  # `stack up --secure` is for the single profile too

    def kafka_nodes(self) -> list[HaKafkaNode]:
        return [c for c in self.components.values() if isinstance(c, HaKafkaNode)]

    def redis_nodes(self) -> list[HaRedisNode]:
        return [c for c in self.components.values() if isinstance(c, HaRedisNode)]

    def sentinels(self) -> list[HaSentinel]:
        return [c for c in self.components.values() if isinstance(c, HaSentinel)]

    def prepare_start(self) -> None:
        """Namespaces and the quorum's ids, before any node starts."""
        if os.geteuid() != 0:
            raise StackError("network namespaces cannot be created: the ha profile must run as root",
                             component="netns")  # fmt: skip
        self.network.up()
        quorum = self.settings.state_dir.resolve() / "kafka-quorum.json"
        if not quorum.exists():
            dirs = {str(i): _kafka_uuid() for i in range(1, NODES + 1)}
            ids = {"cluster_id": _kafka_uuid(), "directories": dirs}
            quorum.write_text(json.dumps(ids, indent=2))

    def down(self) -> None:
        """Sentinels first (no failover while the servers stop), replicas before the primary."""
        self.components["haproxy"].stop()
        for sentinel in self.sentinels():
            sentinel.stop()
        primary_last = sorted(self.redis_nodes(), key=lambda n: self._is_primary(n))
        for node in primary_last:
            node.stop()
        # All brokers at once: stopped one by one, the last would wait for a quorum that is gone.
        with ThreadPoolExecutor(max_workers=NODES + 1) as pool:
            list(pool.map(lambda c: c.stop(), [*self.kafka_nodes(), self.components["mariadb"]]))
        self.network.down()

    def reset(self) -> None:
        """Stop everything, remove the namespaces and the bridge, delete the state directory."""
        self.down()
        self.network.destroy()
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)

    def _is_primary(self, node: HaRedisNode) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            return node.pid() is not None and node.role().startswith("primary")
        return False

    def status(self) -> list[ComponentStatus]:
        statuses = super().status()
        roles = self.roles()
        return [
            dataclasses.replace(s, detail=f"{s.detail}; {roles[s.name]}") if s.name in roles else s
            for s in statuses
        ]

    def roles(self) -> dict[str, str]:
        """Each running node's role: active controller and partition leaderships, primary/replica."""
        roles: dict[str, str] = {}
        kafka = self.kafka_nodes()
        live = [k for k in kafka if k.pid() is not None]
        states = [s for s in (k.quorum_state() for k in live) if s is not None]
        active = max(states, key=lambda s: s[1])[0] if states else -1
        leaders: Counter[int] = Counter()
        if live:
            with contextlib.suppress(KafkaException):
                admin = AdminClient({"bootstrap.servers": self.topology.bootstrap, "log_level": 0})
                for topic in admin.list_topics(timeout=5).topics.values():
                    leaders.update(p.leader for p in topic.partitions.values())
        for k in live:
            role = "broker+controller" + (", active controller" if k.node_id == active else "")
            roles[k.name] = f"{role}, leads {leaders.get(k.node_id, 0)} partitions"
        for comp in [*self.redis_nodes(), *self.sentinels()]:
            assert isinstance(comp, HaRedisNode | HaSentinel)
            if comp.pid() is None:
                continue
            try:
                roles[comp.name] = comp.role()
            except redis.RedisError as exc:
                roles[comp.name] = f"role unknown ({exc})"
        roles["mariadb"] = "single server (no failover)"
        balancer = self.components["haproxy"]
        if isinstance(balancer, HaProxy) and balancer.pid() is not None:
            try:
                roles[balancer.name] = balancer.role()
            except OSError as exc:
                roles[balancer.name] = f"backends unknown ({exc})"
        return roles

    def env(self) -> str:
        s = client_settings(self.settings)
        values = {
            "BP_STACK_PROFILE": "ha",
            "BP_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "BP_REDIS_URL": s.redis.url,
            "BP_REDIS_SENTINELS": s.redis.sentinels,
            "BP_REDIS_SERVICE": s.redis.service,
            "BP_REDIS_MIN_REPLICAS": str(s.redis.min_replicas),
            "BP_TOPIC_REPLICATION": str(s.kafka.topic_replication),
            "BP_DB_URL": s.db.url,
            "BP_STATE_DIR": str(self.settings.state_dir.resolve()),
        }
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in values.items())
