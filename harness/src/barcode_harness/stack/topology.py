"""The addresses of every node of the ``ha`` profile, derived from one subnet."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from barcode_harness.stack.netns import NetNode
from barcode_pipeline.errors import ConfigError

KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MARIADB_PORT = 3306
NODES = 3
APP_HOSTS = 2
NODE_IDS = range(1, NODES + 1)
APP_IDS = range(1, APP_HOSTS + 1)
OFFSETS = {"k": 10, "r": 20, "s": 30, "db": 40, "lb": 50, "app": 50}  # of each node's address


def check_subnet(subnet: str) -> None:
    """BP_HA_SUBNET must be an IPv4 network with room for every node (.1 to .52)."""
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise ConfigError(f"BP_HA_SUBNET: {exc}") from None
    if net.version != 4 or net.num_addresses < 64:
        raise ConfigError(f"BP_HA_SUBNET: {subnet} must be an IPv4 network of at least 64 addresses (/26)")


@dataclass(frozen=True)
class Topology:
    """Addresses of every node, derived from the subnet: .1 host, .11-13 Kafka, .21-23 Redis,
    .31-33 Sentinel, .40 MariaDB, .50 HAProxy, .51-52 the app hosts (``run``, stack/haproxy.py)."""

    subnet: str

    def _ip(self, offset: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + offset)

    @property
    def host_ip(self) -> str:
        """The host namespace's address on the bridge: where scanners and the harness's clients are."""
        return self._ip(1)

    def node(self, name: str, i: int = 0) -> NetNode:
        """Node ``i`` of ``k`` (Kafka), ``r`` (Redis), ``s`` (Sentinel) or ``app``; or ``db``, ``lb``."""
        return NetNode(f"{name}{i or ''}", self._ip(OFFSETS[name] + i))

    def all_nodes(self) -> list[NetNode]:
        per_id = [self.node(name, i) for name in ("k", "r", "s") for i in NODE_IDS]
        return [*per_id, self.node("db"), self.node("lb"), *(self.node("app", i) for i in APP_IDS)]

    def addresses(self, name: str, port: int) -> str:
        """``ip:port`` of every node of ``name`` (k, r or s), comma-separated."""
        return ",".join(f"{self.node(name, i).ip}:{port}" for i in NODE_IDS)

    @property
    def bootstrap(self) -> str:
        return self.addresses("k", KAFKA_PORT)

    @property
    def sentinels(self) -> str:
        return self.addresses("s", SENTINEL_PORT)
