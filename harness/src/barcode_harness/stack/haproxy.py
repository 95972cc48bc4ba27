"""HAProxy (Debian's ``haproxy``) in front of the ha profile's app hosts: scanners keep one address
whichever host answers (``/ready`` checked every 500 ms); only connection failures are retried."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component
from barcode_harness.stack.netns import NetNode
from barcode_harness.stack.process import find_binary
from barcode_harness.stack.topology import APP_IDS, Topology
from barcode_pipeline import names


def render_haproxy_cfg(bind: str, port: int, backends: list[tuple[str, str]], stats_socket: Path) -> str:
    servers = "\n".join(f"    server {name} {ip}:{port} check" for name, ip in backends)
    return f"""# Rendered by barcode-pipeline (ha profile); edits are overwritten on the next `stack up`.
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connection refused by a dead host is retried on the other one; a sent request never is.
    retries 2
    option redispatch

frontend ingest
    bind {bind}:{port}
    # The app hosts believe X-Forwarded-For from this proxy only (BP_INGEST_PROXIES), so it carries
    # the client's address and nothing the client wrote: theirs is deleted, ours added.
    http-request del-header X-Forwarded-For
    http-request del-header X-Forwarded-Proto
    http-request del-header Forwarded
    option forwardfor
    default_backend app_hosts

backend app_hosts
    balance roundrobin
    option httpchk GET {names.ROUTE_READY}
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""


class HaProxy(Component):
    """The load balancer, in namespace ``bplb``; its backends are the app hosts' ingest."""

    name = "haproxy"
    start_timeout = 30.0
    marker = "haproxy"
    net: NetNode

    def __init__(self, settings: HarnessSettings, topo: Topology) -> None:
        super().__init__(settings)
        self.net = topo.node("lb")
        self.backends = [(f"app{i}", topo.node("app", i).ip) for i in APP_IDS]
        self.port = settings.ingest.port
        self.stats_socket = self.home / "admin.sock"

    @property
    def address(self) -> str:
        return f"{self.net.ip}:{self.port}"

    def prepare(self) -> None:
        self.make_dirs()
        cfg = render_haproxy_cfg(self.net.ip, self.port, self.backends, self.stats_socket)
        (self.home / "haproxy.cfg").write_text(cfg)

    def argv(self) -> list[str]:
        return [find_binary("haproxy", "haproxy", self.name), "-db", "-f", str(self.home / "haproxy.cfg")]

    def check(self) -> None:
        with socket.create_connection((self.net.ip, self.port), timeout=2):
            pass

    def server_states(self) -> dict[str, str]:
        """Backend server -> UP / DOWN / ... as HAProxy's health checks see it (stats socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            data = sock.makefile("rb").read()  # HAProxy answers and closes
        rows = csv.DictReader(data.decode(errors="replace").lstrip("# ").splitlines())
        return {
            row["svname"]: row.get("status") or ""
            for row in rows
            if row.get("pxname") == "app_hosts" and row.get("svname") not in ("BACKEND", None)
        }

    def role(self) -> str:
        states = self.server_states()
        return "load balancer: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
