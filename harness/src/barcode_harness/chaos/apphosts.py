"""App hosts of the ha profile: ``barcode-pipeline run`` in namespaces ``bpapp1``/``bpapp2``.

Each host is a whole ``run`` (supervisor, ingest, processor, workers) with a node name of its own,
its own state directory (progress files), and its ingest on its own address behind HAProxy, as
two machines sharing one cluster would be. Killing a host kills every process in its namespace.
Its ingest port answers the balancer only (``admit_only``): clients cannot go around it, so the
X-Forwarded-For the ingest believes is always HAProxy's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from confluent_kafka.admin import AdminClient

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.netns import NetNode, admit_only, namespace_pids
from barcode_harness.stack.topology import APP_HOSTS, Topology
from barcode_pipeline import names
from barcode_pipeline.config import settings_env
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


class AppHost:
    """One ``run`` in its own namespace, its output prefixed with the node name in ``out``."""

    def __init__(self, settings: HarnessSettings, index: int, out: IO[str], *, workers: int = 2) -> None:
        topology = Topology(settings.ha_subnet)
        self.net: NetNode = topology.app(index)
        self.balancer = topology.balancer().ip
        self.node = self.net.name
        self.settings = settings.updated(
            {
                "node_name": self.node,
                "ingest_host": self.net.ip,
                # HAProxy names the client in X-Forwarded-For (after deleting any the client sent)
                "ingest_proxies": self.balancer,
                "workers": workers,
                "state_dir": settings.state_dir.resolve() / "apps" / self.node,
            }
        )
        self.out = out
        self.proc: subprocess.Popen[str] | None = None

    @property
    def ready_url(self) -> str:
        return f"http://{self.net.ip}:{self.settings.ingest.port}{names.ROUTE_READY}"

    def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        admit_only(self.net, self.settings.ingest.port, self.balancer)
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        argv = [*self.net.exec_prefix(), sys.executable, "-m", "barcode_pipeline", "run", "--no-stack"]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)  # fmt: skip
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True, name=f"pump-{self.node}").start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.out.write(f"[{self.node}] {line}")
            self.out.flush()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Asked from inside the host's namespace: from outside only the balancer gets an answer."""
        call = f"wait_http_ok({self.ready_url!r}, {timeout!r})"
        probe = f"from barcode_pipeline.run.startup import wait_http_ok; {call}"
        try:
            done = subprocess.run([*self.net.exec_prefix(), sys.executable, "-c", probe], capture_output=True,
                                  text=True, timeout=timeout + 30, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] if done is not None else ["timed out"]
            raise PipelineError(f"{self.node} not ready: {' '.join(why)}", component="chaos")

    def pids(self) -> list[int]:
        """Every process in the host's namespace."""
        return namespace_pids(self.net)

    def kill(self) -> int:
        """SIGKILL of every process in the namespace at once (the machine lost its power)."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        return len(pids)

    def stop(self, timeout: float = 60.0) -> int | None:
        """Clean stop (SIGTERM: ``run`` drains); whatever is left in the namespace is killed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", self.node, timeout)
        self.kill()
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def app_hosts(settings: HarnessSettings, out: IO[str]) -> list[AppHost]:
    return [AppHost(settings, i, out) for i in range(1, APP_HOSTS + 1)]


def group_members(settings: HarnessSettings) -> dict[str, list[int]]:
    """Static member id -> partitions of the event topic, for every member of the processor group."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    group = admin.describe_consumer_groups([settings.processor.group])[settings.processor.group].result(10)
    out: dict[str, list[int]] = {}
    for member in group.members:
        parts = member.assignment.topic_partitions if member.assignment else []
        out[member.group_instance_id or member.member_id] = sorted(
            p.partition for p in parts if p.topic == names.TOPIC
        )
    return out


def wait_owners(settings: HarnessSettings, prefixes: list[str], timeout: float, partitions: int) -> float:
    """Seconds until every partition is assigned, only to members whose id starts with ``prefixes``."""
    t0 = time.monotonic()
    last: dict[str, list[int]] = {}
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(Exception):
            last = group_members(settings)
            owned = [p for member, parts in last.items() for p in parts]
            if (
                last
                and all(any(m.startswith(x) for x in prefixes) for m in last)
                and sorted(owned) == list(range(partitions))
            ):
                return time.monotonic() - t0
        time.sleep(0.2)
    raise PipelineError(f"the processor group did not settle on {prefixes} within {timeout:.0f}s: {last}",
                        component="chaos")  # fmt: skip


def prefix(node: str) -> str:
    return names.node_member(node, "")
