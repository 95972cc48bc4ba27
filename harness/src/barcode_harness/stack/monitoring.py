"""``stack up --monitoring``: Debian's Prometheus and its Redis, MySQL and node exporters, on loopback,
under the state dir like the other servers."""

from __future__ import annotations

import urllib.request

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import secure
from barcode_harness.stack.base import Component
from barcode_harness.stack.process import find_binary
from barcode_harness.stack.redis import RedisComponent
from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.errors import StackError
from barcode_pipeline.monitoring import promconfig


def _http_ok(url: str, method: str = "GET", timeout: float = 2) -> None:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # a loopback URL built from settings
        if resp.status != 200:
            raise StackError(f"{url} answered {resp.status}")


class PrometheusComponent(Component):
    name = "prometheus"
    start_timeout = 60.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.monitoring.prometheus_port}"

    @property
    def marker(self) -> str:
        return str(self.home / "prometheus.yml")

    def prepare(self) -> None:
        self.make_dirs("data")
        promconfig.write_all(self.settings, self.home)

    def argv(self) -> list[str]:
        return [
            find_binary("prometheus", "prometheus", self.name),
            f"--config.file={self.marker}",
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
        _http_ok(f"http://{self.address}/-/reload", "POST", timeout=10)


class Exporter(Component):
    """A Prometheus exporter (Debian's ``prometheus-<name>``) on loopback, ``/metrics`` its health check."""

    start_timeout = 30.0

    def __init__(self, settings: HarnessSettings, name: str) -> None:
        self.name = name
        super().__init__(settings)
        self.port: int = getattr(settings.monitoring, f"{name.replace('-', '_')}_port")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def marker(self) -> str:
        dashes = "-" if self.name == "redis-exporter" else "--"  # redis_exporter's flags have one dash
        return f"{dashes}web.listen-address={self.address}"

    def prepare(self) -> None:
        self.make_dirs()
        if self.name == "mysqld-exporter":
            db = parse_db_url(self.settings.db.url)
            cnf = f"[client]\nuser={db.user}\npassword={db.password}\nhost={db.host}\nport={db.port}\n"
            secure.write_private(self.home / "my.cnf", cnf.encode())

    def argv(self) -> list[str]:
        binary = find_binary(f"prometheus-{self.name}", f"prometheus-{self.name}", self.name)
        args = {
            "redis-exporter": [f"-redis.addr=redis://{RedisComponent(self.settings).address}"],
            "mysqld-exporter": [f"--config.my-cnf={self.home / 'my.cnf'}"],
            # the host's filesystems (free space of every data directory's disk) and memory; nothing else
            "node-exporter": [f"--collector.{c}" for c in ("disable-defaults", "filesystem", "meminfo")],
        }
        return [binary, *args[self.name], self.marker]

    def check(self) -> None:
        _http_ok(f"http://{self.address}/metrics")


def monitoring_components(settings: HarnessSettings) -> dict[str, Component]:
    exporters = ("redis-exporter", "mysqld-exporter", "node-exporter")
    return {**{n: Exporter(settings, n) for n in exporters}, "prometheus": PrometheusComponent(settings)}
