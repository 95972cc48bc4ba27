"""Network namespaces on one bridge, so every node of the ``ha`` profile has an address of its own: it
can be cut off with iptables inside its namespace, and a killed node's ports are gone. The host keeps
the bridge's first address; nothing here touches an interface or namespace it did not create."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from barcode_harness.stack.process import find_binary
from barcode_pipeline.errors import StackError

BRIDGE = "bpha0"
NS_IFACE = "bpeth0"  # the node's end of its veth, inside its namespace


@dataclass(frozen=True)
class NetNode:
    """One namespace: ``bp<name>``, reached at ``ip`` over the veth ``bpv<name>`` on the bridge."""

    name: str  # short: k1, r1, s1, db (interface names are limited to 15 characters)
    ip: str

    @property
    def namespace(self) -> str:
        return f"bp{self.name}"

    @property
    def veth(self) -> str:
        return f"bpv{self.name}"

    def exec_prefix(self) -> list[str]:
        """Prepend to an argv to run it inside this node's namespace (``ip netns exec`` execs it, so
        the pid recorded for the spawned process is the server's own)."""
        return [_ip(), "netns", "exec", self.namespace]


def _ip() -> str:
    return find_binary("ip", "iproute2", "netns")


def _run(*args: str, check: bool = True, node: NetNode | None = None) -> subprocess.CompletedProcess[str]:
    """``ip <args>``, or ``iptables <args>`` inside ``node``'s namespace; with ``check`` a refusal is a
    one-line StackError."""
    if node is None:
        argv = [_ip(), *args]
    else:
        argv = [*node.exec_prefix(), find_binary("iptables", "iptables", "netns"), "-w", *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        reason = result.stderr.strip() or result.returncode
        if node is not None:
            raise StackError(f"iptables in {node.namespace}: {reason}", component="netns")
        raise StackError(
            f"network namespaces cannot be created here (ip {' '.join(args)}: {reason}); "
            "the ha profile needs root and iproute2",
            component="netns",
        )
    return result


def _ip_json(*args: str) -> list[Any]:
    """``ip -j <args>`` parsed (empty when it fails)."""
    try:
        return list(json.loads(_run("-j", *args, check=False).stdout.strip() or "[]"))
    except ValueError:
        return []


def existing_namespaces() -> set[str]:
    return {entry["name"] for entry in _ip_json("netns", "list")}


def existing_links() -> set[str]:
    return {entry["ifname"] for entry in _ip_json("link", "show")}


def overlapping_routes(subnet: str) -> list[str]:
    """Routes of the host (other than our bridge's) that overlap ``subnet``."""
    net = ipaddress.ip_network(subnet)
    clashes = []
    for route in _ip_json("-4", "route", "show"):
        dst, dev = route.get("dst", ""), route.get("dev", "")
        with contextlib.suppress(ValueError):  # "default" and "" are no networks
            if dev != BRIDGE and ipaddress.ip_network(dst, strict=False).overlaps(net):
                clashes.append(f"{dst} dev {dev}")
    return clashes


class Network:
    """The bridge, the host's address on it and one namespace per node; ownership in a state file."""

    def __init__(self, subnet: str, nodes: list[NetNode], state_file: Path) -> None:
        self.net = ipaddress.ip_network(subnet)
        self.host_ip = str(self.net.network_address + 1)
        self.nodes = nodes
        self.state_file = state_file

    def ours(self) -> bool:
        return self.state_file.exists()

    def conflicts(self) -> list[str]:
        """What is in use by someone else: namespaces, links, overlapping routes (empty when free)."""
        if self.ours():
            return []
        names = existing_namespaces()
        links = existing_links()
        taken = [f"namespace {n.namespace}" for n in self.nodes if n.namespace in names]
        taken += [f"interface {n.veth}" for n in self.nodes if n.veth in links]
        # A bare bridge with our address is what `stack down` of a stopped ha stack leaves: reusable.
        if BRIDGE in links and (taken or self._bridge_address() != f"{self.host_ip}/{self.net.prefixlen}"):
            taken.append(f"interface {BRIDGE} ({self._bridge_address() or 'no address'})")
        taken += [f"subnet {self.net} (route {r})" for r in overlapping_routes(str(self.net))]
        return taken

    @staticmethod
    def _bridge_address() -> str:
        try:
            addr = _ip_json("-4", "addr", "show", "dev", BRIDGE)[0]["addr_info"][0]
            return f"{addr['local']}/{addr['prefixlen']}"
        except (LookupError, TypeError):
            return ""

    def up(self) -> None:
        """Create whatever is missing (idempotent); raise one line when something is taken."""
        taken = self.conflicts()
        if taken:
            raise StackError(
                f"already in use: {', '.join(taken)}; another ha stack runs here (`stack down` with its "
                "BP_STATE_DIR), or choose another BP_HA_SUBNET if a route clashes",
                component="netns",
            )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"subnet": str(self.net), "bridge": BRIDGE}))
        links = existing_links()
        names = existing_namespaces()
        prefix = self.net.prefixlen
        if BRIDGE not in links:
            _run("link", "add", BRIDGE, "type", "bridge")
        if not self._bridge_address():
            _run("addr", "add", f"{self.host_ip}/{prefix}", "dev", BRIDGE)
        _run("link", "set", BRIDGE, "up")
        for node in self.nodes:
            ns = node.namespace
            if ns not in names:
                _run("netns", "add", ns)
            _run("-n", ns, "link", "set", "lo", "up")
            if node.veth not in links:
                _run("link", "add", node.veth, "type", "veth", "peer", "name", NS_IFACE, "netns", ns)
                _run("link", "set", node.veth, "master", BRIDGE, "up")
                _run("-n", ns, "addr", "add", f"{node.ip}/{prefix}", "dev", NS_IFACE)
            _run("-n", ns, "link", "set", NS_IFACE, "up")

    def down(self) -> None:
        """Delete our namespaces (their veths go with them). The bridge stays, with the subnet's route:
        a client still configured for the nodes fails at once instead of using the default gateway."""
        if not self.ours():
            return
        names = existing_namespaces()
        for node in self.nodes:
            if node.namespace in names:
                _run("netns", "del", node.namespace, check=False)

    def destroy(self) -> None:
        """Namespaces and bridge gone (``stack reset``)."""
        if not self.ours():
            return
        self.down()
        if BRIDGE in existing_links():
            _run("link", "del", BRIDGE, check=False)
        self.state_file.unlink(missing_ok=True)


def namespace_pids(node: NetNode) -> list[int]:
    """Every process running in ``node``'s namespace (a whole app host, for a host-kill fault)."""
    out = _run("netns", "pids", node.namespace, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def cut_off(node: NetNode, peers: list[str]) -> None:
    """Drop every packet between ``node`` and ``peers`` (rules inside the node's own namespace,
    so nothing outside our namespaces is touched). The host and other addresses still reach it."""
    for peer in peers:
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            _run("-A", chain, flag, peer, "-j", "DROP", node=node)


def reconnect(node: NetNode) -> None:
    """Undo :func:`cut_off`: flush the namespace's filter rules (only ours live there)."""
    for chain in ("INPUT", "OUTPUT"):
        _run("-F", chain, check=False, node=node)


def admit_only(node: NetNode, port: int, source: str) -> None:
    """Drop TCP to ``port`` of ``node`` from all but ``source`` and itself, as a host behind a load
    balancer is firewalled; once, in the mangle table, which :func:`reconnect` (flushing filter) keeps."""
    rule = ["PREROUTING", "!", "-i", "lo", "-p", "tcp", "--dport", str(port), "!", "-s", source, "-j", "DROP"]
    if _run("-t", "mangle", "-C", *rule, check=False, node=node).returncode != 0:
        _run("-t", "mangle", "-A", *rule, node=node)
