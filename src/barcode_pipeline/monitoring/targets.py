"""Where each service serves ``/metrics``: one function, used by ``run``, the scrape config and ``top``.

Ports come from settings: under ``run`` the supervisor serves its /health and /metrics (the
liveness watchdog's) on ``BP_METRICS_PORT_BASE``, processor-i on base + i and worker-i on
base + processors + i, so the addresses are known without asking the supervisor. 0 as the base
means no metrics servers for those (ingest and legacy always serve /metrics on their own port).
"""

from __future__ import annotations

from dataclasses import dataclass

from barcode_pipeline import names
from barcode_pipeline.config import Settings

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Target:
    job: str  # Prometheus job: bp-ingest, bp-supervisor, bp-processor, bp-worker, bp-backlog, ...
    name: str  # the service's name under `run` (worker-1, processor, ...): the `service` label
    address: str  # host:port

    @property
    def url(self) -> str:
        return f"http://{self.address}{names.ROUTE_METRICS}"


def processor_name(settings: Settings, index: int) -> str:
    return "processor" if settings.processor.count == 1 else f"processor-{index}"


def processor_port(settings: Settings, index: int) -> int:
    return settings.monitoring.metrics_port_base + index


def worker_port(settings: Settings, index: int) -> int:
    return settings.monitoring.metrics_port_base + settings.processor.count + index


def pipeline_targets(settings: Settings, *, legacy: bool = True) -> list[Target]:
    """The pipeline's own endpoints (ingest, supervisor, processors, workers, backlog exporter, legacy)."""
    out = [Target(names.JOB_INGEST, "ingest", f"{settings.ingest.host}:{settings.ingest.port}")]
    if settings.monitoring.metrics_port_base:
        out.append(
            Target(names.JOB_SUPERVISOR, "supervisor", f"{HOST}:{settings.monitoring.metrics_port_base}")
        )
        for i in range(1, settings.processor.count + 1):
            address = f"{HOST}:{processor_port(settings, i)}"
            out.append(Target(names.JOB_PROCESSOR, processor_name(settings, i), address))
        for i in range(1, settings.worker.count + 1):
            out.append(Target(names.JOB_WORKER, f"worker-{i}", f"{HOST}:{worker_port(settings, i)}"))
    out.append(Target(names.JOB_BACKLOG, "backlog", f"{HOST}:{settings.monitoring.exporter_port}"))
    if legacy:
        out.append(Target(names.JOB_LEGACY, "legacy", f"{settings.legacy.host}:{settings.legacy.port}"))
    return out


def exporter_targets(settings: Settings) -> list[Target]:
    """Debian's Redis, MySQL and node exporters run by ``stack up --monitoring``."""
    return [
        Target("redis", "redis", f"{HOST}:{settings.monitoring.redis_exporter_port}"),
        Target("mysql", "mariadb", f"{HOST}:{settings.monitoring.mysqld_exporter_port}"),
        Target("node", "host", f"{HOST}:{settings.monitoring.node_exporter_port}"),
    ]
