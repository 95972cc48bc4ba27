"""``stack up --monitoring``: Debian's Prometheus and its Redis, MySQL and node exporters, on loopback.

They live under the state dir like the other servers (``<state_dir>/prometheus/data`` holds the
TSDB) and are started and stopped with the stack. Prometheus listens on ``prometheus_port``.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.errors import MissingPrerequisite, StackError
from barcode_pipeline.monitoring import promconfig

MONITORING_NAMES = ("prometheus", "redis-exporter", "mysqld-exporter", "node-exporter")


def _binary(name: str, package: str, component: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if not found:
        raise MissingPrerequisite(
            f"{name} not found; install it with: apt-get install -y {package} (scripts/setup.sh does)",
            component=component,
        )
    return found


def _http_ok(url: str) -> None:
    with urllib.request.urlopen(url, timeout=2) as resp:  # a loopback URL built from settings
        if resp.status != 200:
            raise StackError(f"{url} answered {resp.status}")


class PrometheusComponent(Component):
    name = "prometheus"
    start_timeout = 60.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.monitoring.prometheus_port}"

    @property
    def config(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def marker(self) -> str:
        return str(self.config)

    def prepare(self) -> None:
        self.make_dirs("data")
        promconfig.write_all(self.settings, self.home)

    def argv(self) -> list[str]:
        return [
            _binary("prometheus", "prometheus", self.name),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.home / 'data'}",
            f"--storage.tsdb.retention.time={self.settings.prometheus_retention}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",  # `monitor reload` (POST /-/reload) after a settings change
        ]

    def check(self) -> None:
        _http_ok(f"http://{self.address}/-/ready")

    def start(self) -> bool:
        """Start, or re-render the config of a running Prometheus and reload it (settings may differ)."""
        if self.pid() is None:
            return super().start()
        self.wait_healthy()
        self.reload()
        return False

    def reload(self) -> None:
        """Write the config and rules from the current settings and make Prometheus re-read them."""
        self.prepare()
        request = urllib.request.Request(f"http://{self.address}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:  # loopback URL built from settings
            if resp.status != 200:
                raise StackError(f"reload answered {resp.status}", component=self.name)


class _Exporter(Component):
    """A Prometheus exporter on loopback: its port, its listen flag, ``/metrics`` as the health check."""

    start_timeout = 30.0
    listen_flag = "--web.listen-address"

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def marker(self) -> str:
        return f"{self.listen_flag}={self.address}"

    def prepare(self) -> None:
        self.make_dirs()

    def check(self) -> None:
        _http_ok(f"http://{self.address}/metrics")


class RedisExporterComponent(_Exporter):
    name = "redis-exporter"
    listen_flag = "-web.listen-address"

    @property
    def port(self) -> int:
        return self.settings.monitoring.redis_exporter_port

    def argv(self) -> list[str]:
        parts = urlsplit(self.settings.redis.url)
        redis_addr = f"redis://{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        return [
            _binary("prometheus-redis-exporter", "prometheus-redis-exporter", self.name),
            f"-redis.addr={redis_addr}",
            self.marker,
        ]


class MysqldExporterComponent(_Exporter):
    name = "mysqld-exporter"

    @property
    def port(self) -> int:
        return self.settings.monitoring.mysqld_exporter_port

    @property
    def my_cnf(self) -> Path:
        return self.home / "my.cnf"

    def prepare(self) -> None:
        super().prepare()
        db = parse_db_url(self.settings.db.url)
        self.my_cnf.write_text(
            f"[client]\nuser={db.user}\npassword={db.password}\nhost={db.host}\nport={db.port}\n"
        )
        self.my_cnf.chmod(0o600)

    def argv(self) -> list[str]:
        return [
            _binary("prometheus-mysqld-exporter", "prometheus-mysqld-exporter", self.name),
            f"--config.my-cnf={self.my_cnf}",
            self.marker,
        ]


class NodeExporterComponent(_Exporter):
    """The host's filesystems (free space of every data directory's disk) and memory; nothing else."""

    name = "node-exporter"

    @property
    def port(self) -> int:
        return self.settings.monitoring.node_exporter_port

    def argv(self) -> list[str]:
        return [
            _binary("prometheus-node-exporter", "prometheus-node-exporter", self.name),
            "--collector.disable-defaults",
            "--collector.filesystem",
            "--collector.meminfo",
            self.marker,
        ]


def monitoring_components(settings: HarnessSettings) -> dict[str, Component]:
    return {
        "redis-exporter": RedisExporterComponent(settings),
        "mysqld-exporter": MysqldExporterComponent(settings),
        "node-exporter": NodeExporterComponent(settings),
        "prometheus": PrometheusComponent(settings),
    }
