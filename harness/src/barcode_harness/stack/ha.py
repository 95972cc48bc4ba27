"""The ``ha`` profile: 3 KRaft nodes, a Redis primary, 2 replicas and 3 Sentinels, one MariaDB, each in
a network namespace of its own (stack/netns.py), so a fault can kill, pause or cut off one node alone."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component, ComponentStatus
from barcode_harness.stack.ha_nodes import HaKafkaNode, HaMariaDB, HaRedisNode, HaSentinel, client_settings
from barcode_harness.stack.haproxy import HaProxy
from barcode_harness.stack.kafka import kafka_uuid
from barcode_harness.stack.manager import StackManager
from barcode_harness.stack.netns import Network
from barcode_harness.stack.topology import NODE_IDS, NODES, Topology, check_subnet
from barcode_pipeline.errors import StackError

C = TypeVar("C", bound=Component)


class HaStackManager(StackManager):
    """The ha profile's nodes under ``settings.state_dir``, each in its own namespace."""

    profile = "ha"

    def __init__(self, settings: HarnessSettings) -> None:
        check_subnet(settings.ha_subnet)
        self.topology = Topology(settings.ha_subnet)
        self.network = Network(settings.ha_subnet, self.topology.all_nodes(),
                               settings.state_dir.resolve() / "network.json")  # fmt: skip
        super().__init__(settings)
        self.monitoring = {}  # `stack up --monitoring` and `--secure` are for the single profile

    def servers(self) -> list[Component]:
        topo, settings = self.topology, self.settings
        return [
            *(HaKafkaNode(settings, i, topo) for i in NODE_IDS),
            *(HaRedisNode(settings, i, topo) for i in NODE_IDS),
            *(HaSentinel(settings, i, topo) for i in NODE_IDS),
            HaMariaDB(settings, topo),
            HaProxy(settings, topo),
        ]

    def _of(self, kind: type[C]) -> list[C]:
        return [c for c in self.components.values() if isinstance(c, kind)]

    def kafka_nodes(self) -> list[HaKafkaNode]:
        return self._of(HaKafkaNode)

    def redis_nodes(self) -> list[HaRedisNode]:
        return self._of(HaRedisNode)

    def sentinels(self) -> list[HaSentinel]:
        return self._of(HaSentinel)

    def prepare_start(self) -> None:
        """Namespaces and the quorum's ids, before any node starts."""
        if os.geteuid() != 0:
            raise StackError("network namespaces cannot be created: the ha profile must run as root",
                             component="netns")  # fmt: skip
        self.network.up()
        quorum = self.settings.state_dir.resolve() / "kafka-quorum.json"
        if not quorum.exists():
            ids = {"cluster_id": kafka_uuid(), "directories": {str(i): kafka_uuid() for i in NODE_IDS}}
            quorum.write_text(json.dumps(ids, indent=2))

    def down(self) -> None:
        """Sentinels first (no failover while the servers stop), replicas before the primary."""
        primary_last = sorted(self.redis_nodes(), key=self._is_primary)
        for comp in [self.components["haproxy"], *self.sentinels(), *primary_last]:
            comp.stop()
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
        roles = self.roles()
        return [
            dataclasses.replace(s, detail=f"{s.detail}; {roles[s.name]}") if s.name in roles else s
            for s in super().status()
        ]

    def roles(self) -> dict[str, str]:
        """Each running node's role: active controller and partition leaderships, primary/replica."""
        roles: dict[str, str] = {"mariadb": "single server (no failover)"}
        live = [k for k in self.kafka_nodes() if k.pid() is not None]
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
        with_roles: list[HaRedisNode | HaSentinel | HaProxy] = [*self.redis_nodes(), *self.sentinels()]
        for comp in [*with_roles, *self._of(HaProxy)]:
            if comp.pid() is not None:
                try:
                    roles[comp.name] = comp.role()
                except (redis.RedisError, OSError) as exc:
                    roles[comp.name] = f"role unknown ({exc})"
        return roles

    def env_values(self, settings: HarnessSettings | None = None) -> dict[str, str]:
        s = client_settings(settings or self.settings)
        return {
            "BP_STACK_PROFILE": "ha",
            **super().env_values(s),
            "BP_REDIS_SENTINELS": s.redis.sentinels,
            "BP_REDIS_SERVICE": s.redis.service,
            "BP_REDIS_MIN_REPLICAS": str(s.redis.min_replicas),
            "BP_TOPIC_REPLICATION": str(s.kafka.topic_replication),
        }
