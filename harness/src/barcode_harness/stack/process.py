"""Background server processes tracked by pid files, in sessions of their own (they outlive the CLI);
zombies count as dead."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from barcode_pipeline.errors import MissingPrerequisite, StackError


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def is_alive(pid: int | None, marker: str | None = None) -> bool:
    """True when ``pid`` runs, is not a zombie and has ``marker`` in its command line (looked at thrice:
    a server rewriting its process title, as Redis does, briefly shows an empty one)."""
    if not pid:
        return False
    for attempt in range(3):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own dead children so they stop looking alive
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        if marker is None or marker in cmdline:
            return True
        time.sleep(0.05 * (attempt + 1))
    return False


def spawn(argv: list[str], *, log: Path, pidfile: Path) -> None:
    """Start ``argv`` detached, stdout+stderr appended to ``log``; record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # Popen closes every other descriptor (close_fds defaults to True)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    pidfile.write_text(str(proc.pid))


def _gone(pid: int, marker: str | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, marker):
            return True
        time.sleep(0.05)
    return False


def terminate(pid: int, marker: str | None, *, timeout: float = 30.0) -> None:
    """SIGTERM our server ``pid``, wait up to ``timeout`` for a clean exit, then SIGKILL."""
    if not is_alive(pid, marker):  # a stale pid file names somebody else's process
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _gone(pid, marker, timeout):
        kill(pid)


def kill(pid: int) -> None:
    """SIGKILL (used by fault injection and as the last resort of ``terminate``)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _gone(pid, None, 10)


def find_binary(name: str, package: str, component: str) -> str:
    """``name`` on PATH or in the sbin folders (root's tools), else how to install it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if not found:
        raise MissingPrerequisite(
            f"{name} not found; install it with: apt-get install -y {package}", component=component
        )
    return found


def run_tool(argv: list[str], failure: str, component: str) -> None:
    """Run a set-up tool to completion; a failure is a StackError ending with the tail of its output."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"{failure}: {output[-500:]}", component=component)
