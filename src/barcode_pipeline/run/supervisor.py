"""Supervise the pipeline's services as child processes.

Each service runs in its own process (one CLI command each), so a crash, a kill -9 or a slow
garbage collection in one never stalls another. Output lines are prefixed with the child's name.
Stopping drains front to back: ingest stops accepting and flushes to Kafka, the processor
finishes its batch and commits, then the workers commit and ack what they hold.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO

from barcode_pipeline import names
from barcode_pipeline.config import Settings, role_env, settings_env
from barcode_pipeline.liveness import progress_path
from barcode_pipeline.run.watchdog import Watchdog, Watched

log = logging.getLogger(__name__)

STOP_ORDER = (names.Role.INGEST, names.Role.PROCESSOR, names.Role.WORKER)


class Hold(StrEnum):
    """Why the supervisor's restart loop leaves a dead child alone."""

    DRAINING = "draining"  # stop() ends it on purpose; a restart would undo the drain
    PAUSED = "paused"  # fault injection keeps it down until it resumes it itself
    TAKEN_OVER = "taken over"  # the liveness watchdog restarts it; a second start would run two copies


@dataclass
class ChildSpec:
    name: str
    role: names.Role  # its settings and secrets (config.role_env) and its place in the drain order
    args: list[str]  # barcode-pipeline sub-command and options
    env: dict[str, str] = field(default_factory=dict)
    restart: bool = True
    watched: bool = False  # it writes a progress file, which the liveness watchdog judges


class Child:
    def __init__(self, spec: ChildSpec, base_env: dict[str, str], out: IO[str]) -> None:
        self.spec = spec
        self.base_env = base_env
        self.out = out
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self.hold: Hold | None = None  # set while the restart loop must not restart it

    @property
    def held(self) -> bool:
        """Someone else (the drain, fault injection, the liveness watchdog) decides whether it runs."""
        return self.hold is not None

    def start(self) -> None:
        # The parent's own BP_* variables (its secret files among them) are not passed on: the child
        # gets its role's settings only (config.role_env).
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
        env = {**inherited, **self.base_env, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        argv = [sys.executable, "-m", "barcode_pipeline", *self.spec.args]
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(
            target=self._pump, args=(self.proc,), daemon=True, name=f"pump-{self.spec.name}"
        ).start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        # JSON log lines name their service themselves and must stay one object per line.
        prefix = "" if self.base_env.get("BP_LOG_FORMAT") == "json" else f"[{self.spec.name}] "
        for line in proc.stdout:
            self.out.write(prefix + line)
            self.out.flush()  # operators and the fault-injection harness read the log as it happens

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


class Supervisor:
    """Starts children, restarts the ones that die (unless told not to), drains them in order."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[ChildSpec],
        *,
        out: IO[str] | None = None,
        restart_delay_s: float = 1.0,
        health_port: int | None = None,
        watchdog_grace_s: float = 5.0,
    ) -> None:
        """``health_port``: serve the liveness watchdog's /health and /metrics there (run/watchdog.py)."""
        self.settings = settings
        self.base_env = settings_env(settings)
        self.out = out or sys.stderr  # where the children's lines go (others may add theirs in order)
        self.children = {s.name: Child(s, role_env(settings, s.role), self.out) for s in specs}
        self.restart_delay_s = restart_delay_s
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a liveness watchdog's restart never races the drain
        self._restarter: threading.Thread | None = None
        self.exit_codes: dict[str, int | None] = {}  # filled by stop()
        self.liveness = Watchdog(self, settings, health_port=health_port, grace_s=watchdog_grace_s)

    def start(self) -> None:
        for child in self.children.values():
            child.start()
            log.info("started %s (pid %s)", child.spec.name, child.pid)
        self._restarter = threading.Thread(target=self._restart_the_dead, daemon=True, name="supervisor")
        self._restarter.start()
        self.liveness.start()

    def take_over(self, child: Watched, stop: Callable[[], None]) -> bool:
        """The liveness watchdog's restart of a stalled child: ``stop`` ends it while this loop's own
        restarts hold off (never two copies), then it starts again unless the supervisor is stopping."""
        own = self.children[child.spec.name]
        own.hold = Hold.TAKEN_OVER
        try:
            stop()
            with self._lock:
                if self._stop.is_set():
                    return False
                own.restarts += 1
                own.start()
                return True
        finally:
            own.hold = None

    def _restart_the_dead(self) -> None:
        while not self._stop.wait(0.2):
            for child in self.children.values():
                if child.alive() or child.held or not child.spec.restart:
                    continue
                code = child.proc.returncode if child.proc else None
                log.warning(
                    "%s exited with %s; restarting in %.1fs", child.spec.name, code, self.restart_delay_s
                )
                if self._stop.wait(self.restart_delay_s):
                    return
                if child.alive() or child.held:  # restarted or held meanwhile: never run two copies
                    continue
                child.restarts += 1
                child.start()

    # --- fault injection and control ---
    def kill(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Signal a child; with SIGKILL the restart loop starts it again (if its spec says so)."""
        self.children[name].signal(signum)

    def pause_restarts(self, name: str, paused: bool) -> None:
        """Hold a child's restarts (fault injection); lifting it leaves a drain or a take-over alone."""
        child = self.children[name]
        if paused:
            child.hold = Hold.PAUSED
        elif child.hold is Hold.PAUSED:
            child.hold = None

    def restart(self, name: str) -> None:
        child = self.children[name]
        if not child.alive():
            child.start()  # before un-pausing, so the watchdog cannot start a second copy
        self.pause_restarts(name, False)

    def names(self, role: names.Role) -> list[str]:
        return [n for n, c in self.children.items() if c.spec.role is role]

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """Drain: SIGTERM role by role (ingest, processor, workers), SIGKILL what overstays."""
        with self._lock:
            self._stop.set()
        self.liveness.stop()
        codes: dict[str, int | None] = {}
        others = sorted({c.spec.role for c in self.children.values()} - set(STOP_ORDER))
        for role in (*others, *STOP_ORDER):  # extra roles (e.g. legacy) first: nothing depends on them
            group = [c for c in self.children.values() if c.spec.role == role]
            for child in group:
                child.hold = Hold.DRAINING
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                if not child.wait(max(0.1, deadline - time.monotonic())):
                    log.warning("%s did not stop in %.0fs; killing", child.spec.name, timeout)
                    child.signal(signal.SIGKILL)
                    child.wait(5)
                codes[child.spec.name] = child.proc.returncode if child.proc else None
            if group:  # one line per role, in drain order: the log shows front to back
                log.info(
                    "drained %s (%s)", role, ", ".join(f"{c.spec.name}={codes[c.spec.name]}" for c in group)
                )
        self.exit_codes = codes
        return codes

    def request_stop(self) -> None:
        """Ask :meth:`wait_forever` to return (safe from a signal handler)."""
        self._stop.set()

    def wait_forever(self) -> None:
        while not self._stop.wait(1.0):
            pass


def pipeline_specs(
    settings: Settings, *, workers: int | None = None, metrics: bool = True
) -> list[ChildSpec]:
    """The standard pipeline: ingest (its own multi-process server), one processor, N workers.

    Processors and workers write progress files for the liveness watchdog; with ``metrics`` they
    serve metrics on the ports after ``BP_METRICS_PORT_BASE`` (the supervisor's own; the addresses
    are computed in monitoring/targets.py, which the scrape config and ``top`` use too).
    """
    from barcode_pipeline.monitoring import targets

    specs = [ChildSpec("ingest", names.Role.INGEST, ["ingest"])]
    metrics = metrics and settings.monitoring.metrics_port_base > 0
    for i in range(1, settings.processor.count + 1):
        name = targets.processor_name(settings, i)
        extra = ["--metrics-port", str(targets.processor_port(settings, i))] if metrics else []
        extra += ["--progress-file", str(progress_path(settings.state_dir, name))]
        # Static membership: the supervisor restarts a child under the same name, which then gets
        # its partitions back at once instead of after the dead member's session and a rebalance.
        # The member id carries the node name, so processors of two app hosts never fence each other.
        member = names.node_member(settings.node_name, name)
        specs.append(
            ChildSpec(name, names.Role.PROCESSOR, ["processor", "--instance", member, *extra], watched=True)
        )
    for i in range(1, (workers or settings.worker.count) + 1):
        extra = ["--metrics-port", str(targets.worker_port(settings, i))] if metrics else []
        extra += ["--progress-file", str(progress_path(settings.state_dir, f"worker-{i}"))]
        consumer = names.node_member(settings.node_name, f"worker-{i}")
        specs.append(
            ChildSpec(f"worker-{i}", names.Role.WORKER, ["worker", "--name", consumer, *extra], watched=True)
        )
    return specs
