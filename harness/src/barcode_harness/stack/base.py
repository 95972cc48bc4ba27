"""What every local component has in common: paths, pid file, start/stop/kill and health."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import process
from barcode_pipeline.errors import StackError

if TYPE_CHECKING:
    from barcode_harness.stack.netns import NetNode
    from barcode_harness.stack.secure import SecureFiles


def rotate_logs(folder: Path, *, max_bytes: int = 64 * 2**20, keep: int = 3) -> list[Path]:
    """Before a server starts: each ``*.log`` over ``max_bytes`` becomes ``.log.1`` (older ones shift,
    the oldest beyond ``keep`` goes), so a stack restarted for weeks keeps bounded logs."""
    rotated: list[Path] = []
    for log in sorted(folder.glob("*.log")) if folder.is_dir() else []:
        if log.stat().st_size <= max_bytes:
            continue
        for n in range(keep - 1, 0, -1):
            older = log.with_name(f"{log.name}.{n}")
            if older.exists():
                older.replace(log.with_name(f"{log.name}.{n + 1}"))
        log.replace(log.with_name(f"{log.name}.1"))
        log.with_name(f"{log.name}.{keep + 1}").unlink(missing_ok=True)
        rotated.append(log)
    return rotated


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str = ""


class Component(abc.ABC):
    """One server of the local stack, living in ``<state_dir>/<name>/``."""

    name: str = ""
    start_timeout: float = 60.0
    # Set by the secured stack's manager (stack/secure.py): TLS and per-role users on this server.
    secure: SecureFiles | None = None
    # The ha profile's nodes: the network namespace the server runs in (stack/netns.py).
    net: NetNode | None = None

    # The process's own stdout/stderr: its log, unless the server writes a log file of its own
    stdout_name = "server.log"

    def __init__(self, settings: HarnessSettings) -> None:
        self.settings = settings
        self.home = (settings.state_dir / self.name).resolve()
        self.pidfile = self.home / "server.pid"
        self.logfile = self.home / "logs" / "server.log"
        self.stdout_log = self.home / "logs" / self.stdout_name

    def make_dirs(self, *names: str) -> None:
        """Folders under the server's home (``logs`` always): what ``prepare`` creates first."""
        for name in ("logs", *names):
            (self.home / name).mkdir(parents=True, exist_ok=True)

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @property
    @abc.abstractmethod
    def marker(self) -> str:
        """A string in the server's command line that proves a pid is really ours."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create config files and initialise storage on first start (idempotent)."""

    @abc.abstractmethod
    def argv(self) -> list[str]: ...

    @abc.abstractmethod
    def check(self) -> None:
        """Raise if the server does not really answer (round trip, PING, SELECT 1)."""

    def after_start(self) -> None:
        """First-start bootstrap once healthy (users, databases). Default: nothing."""
        return None

    def pid(self) -> int | None:
        pid = process.read_pid(self.pidfile)
        return pid if process.is_alive(pid, self.marker) else None

    def start(self) -> bool:
        """Start unless running; wait until healthy. Returns True if it was started now."""
        if self.pid() is not None:
            self.wait_healthy()
            return False
        self.home.mkdir(parents=True, exist_ok=True)
        self.prepare()
        rotate_logs(self.home / "logs")
        prefix = self.net.exec_prefix() if self.net is not None else []
        process.spawn([*prefix, *self.argv()], log=self.stdout_log, pidfile=self.pidfile)
        self.wait_healthy()
        self.after_start()
        return True

    def wait_healthy(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.start_timeout)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid() is None:
                tail = " | ".join(self.log_tail(3))[-400:]
                raise StackError(f"exited while starting; see {self.logfile}", component=self.name, hint=tail)
            try:
                self.check()
                return
            except Exception as exc:
                last = exc
                time.sleep(0.25)
        raise StackError(
            f"did not answer within {timeout or self.start_timeout:.0f}s ({last}); see {self.logfile}",
            component=self.name,
        )

    def stop(self, timeout: float = 60.0) -> None:
        pid = self.pid()
        if pid is not None:
            process.terminate(pid, self.marker, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, for fault injection."""
        pid = self.pid()
        if pid is not None:
            process.kill(pid)

    def status(self) -> ComponentStatus:
        pid = self.pid()
        healthy, detail = False, "stopped"
        if pid is not None:
            try:
                self.check()
                healthy, detail = True, "ok"
            except Exception as exc:
                detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        return ComponentStatus(self.name, self.address, pid, pid is not None, healthy, detail)

    def log_tail(self, lines: int) -> list[str]:
        try:
            return self.logfile.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ["(no log yet)"]
