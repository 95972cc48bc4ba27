"""Bring the local stack up and down as one unit."""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import profile as profiles
from barcode_harness.stack import secure as transport
from barcode_harness.stack.base import Component, ComponentStatus
from barcode_harness.stack.kafka import KafkaComponent
from barcode_harness.stack.mariadb import MariaDBComponent
from barcode_harness.stack.redis import RedisComponent
from barcode_pipeline.errors import ConfigError, StackError

log = logging.getLogger(__name__)

COMPONENT_NAMES = ("kafka", "redis", "mariadb")


class StackManager:
    """Owns the three servers under ``settings.state_dir``."""

    profile = "single"  # see stack/profile.py; stack/ha.py holds the replicated profile

    def __init__(
        self,
        settings: HarnessSettings,
        *,
        monitoring: bool = False,
        secure: transport.SecureFiles | None = None,
    ) -> None:
        """``monitoring`` adds Prometheus and its exporters (stack/monitoring.py) to what ``up`` starts.
        ``secure``: TLS and per-role users (stack/secure.py); ``settings`` then hold its admin's."""
        from barcode_harness.stack.monitoring import monitoring_components

        self.settings = settings
        self.secure = secure
        self.components: dict[str, Component] = {c.name: c for c in self.servers()}
        for comp in self.components.values():
            comp.secure = secure
        self.monitoring = monitoring_components(settings)
        if monitoring:
            self.components.update(self.monitoring)

    def servers(self) -> list[Component]:
        return [KafkaComponent(self.settings), RedisComponent(self.settings), MariaDBComponent(self.settings)]

    def component(self, name: str) -> Component:
        try:
            return {**self.monitoring, **self.components}[name]
        except KeyError:
            choices = ", ".join((*self.components, *self.monitoring))
            raise ConfigError(f"unknown component {name!r}; choose one of {choices}") from None

    def up(self, *, quiet: bool = False) -> dict[str, float]:
        """Start what is not running, in parallel (Kafka's JVM dominates a cold start), and wait until
        every component answers; idempotent. Returns seconds per component."""
        profiles.claim(self.settings.state_dir, self.profile)
        transport.claim(self.settings.state_dir, self.secure is not None)
        self.prepare_start()
        timings: dict[str, float] = {}

        def start(comp: Component) -> None:
            t0 = time.monotonic()
            started = comp.start()
            timings[comp.name] = time.monotonic() - t0
            log.info("%s %s at %s (%.1fs)", comp.name, "started" if started else "already up", comp.address,
                     timings[comp.name])  # fmt: skip

        errors: list[str] = []
        spinner = Console(stderr=True).status(f"starting {', '.join(self.components)} ...", spinner="dots")
        with contextlib.nullcontext() if quiet else spinner, ThreadPoolExecutor(len(self.components)) as pool:
            futures = {comp: pool.submit(start, comp) for comp in self.components.values()}
            for comp, fut in futures.items():
                try:
                    fut.result()
                except Exception as exc:
                    errors.append(str(exc) if comp.name in str(exc) else f"{comp.name}: {exc}")
        if errors:
            raise StackError("; ".join(errors))
        return timings

    def prepare_start(self) -> None:
        """What must exist before any server starts (the ha profile's namespaces). Default: nothing."""

    def down(self) -> None:
        """Stop cleanly (data kept), monitoring included. The pipeline's processes should be stopped first."""
        for comp in [*self.monitoring.values(), *(self.components[n] for n in reversed(COMPONENT_NAMES))]:
            comp.stop()

    def status(self) -> list[ComponentStatus]:
        return [c.status() for c in self.components.values()]

    def monitoring_status(self) -> list[ComponentStatus]:
        """Prometheus and the exporters that run although this manager was not asked to start them."""
        extra = [c for n, c in self.monitoring.items() if n not in self.components and c.pid() is not None]
        return [c.status() for c in extra]

    def healthy(self) -> bool:
        return all(s.healthy for s in self.status())

    def reset(self) -> None:
        """Stop everything and delete the state directory (the Kafka jar cache is kept)."""
        self.down()
        shutil.rmtree(self.settings.state_dir, ignore_errors=True)

    def env(self, *, show_secrets: bool = False) -> str:
        """Shell exports of the connection settings the services read (a secured stack's secrets as
        ``BP_*_FILE`` paths, or inline: stack/secure.py; the plaintext stack's are the known dev ones)."""
        if self.secure is not None:
            return transport.env_lines(self.settings, show_secrets=show_secrets)
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env_values().items())

    def env_values(self, settings: HarnessSettings | None = None) -> dict[str, str]:
        s = settings or self.settings
        return {
            "BP_KAFKA_BOOTSTRAP": s.kafka.bootstrap,
            "BP_REDIS_URL": s.redis.url,
            "BP_DB_URL": s.db.url,
            "BP_STATE_DIR": str(self.settings.state_dir.resolve()),
        }
