"""App hosts of the ha profile: ``barcode-pipeline run`` in namespaces ``bpapp1``/``bpapp2``.

Each is a whole ``run`` with its own node name, state directory and ingest address behind HAProxy,
as two machines sharing one cluster would be. Its ingest answers the balancer only
(``admit_only``), so the X-Forwarded-For it believes is always HAProxy's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.netns import NetNode, admit_only, namespace_pids
from barcode_harness.stack.topology import Topology
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
        url = f"http://{self.net.ip}:{self.settings.ingest.port}{names.ROUTE_READY}"
        call = f"wait_http_ok({url!r}, {timeout!r})"
        probe = f"from barcode_pipeline.run.startup import wait_http_ok; {call}"
        try:
            done = subprocess.run([*self.net.exec_prefix(), sys.executable, "-c", probe], capture_output=True,
                                  text=True, timeout=timeout + 30, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:] if done is not None else ["timed out"]
            raise PipelineError(f"{self.node} not ready: {' '.join(why)}", component="chaos")

    def kill(self) -> int:
        """SIGKILL of every process in the namespace at once (the machine lost its power)."""
        pids = namespace_pids(self.net)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        return len(pids)

    def stop(self, timeout: float = 60.0) -> None:
        """Clean stop (SIGTERM: ``run`` drains); whatever is left in the namespace is killed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", self.node, timeout)
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
