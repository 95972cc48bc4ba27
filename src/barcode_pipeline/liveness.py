"""Progress of a service's main loop, published for the supervisor's liveness watchdog.

A processor or worker whose loop is blocked (a call that never returns, a client that stopped
fetching) looks alive to a process check. So each one records when its loop last moved work, last
found nothing waiting for it, or last retried a dependency that was down, and a thread writes
that record to a small JSON file every second. The supervisor (``run/watchdog.py``) compares it
with the stage's backlog and restarts a service that has work waiting and has moved none.

Why a file and not Redis: the watchdog must judge while Redis (or Kafka, or the database) is down,
and a dependency outage must never look like a stall. A local file, replaced atomically, is there
whatever server is away; the supervisor and its children share the machine and the state dir.

Also here: the thread-stack dump on SIGUSR1 (faulthandler) that the watchdog asks for before it
restarts a service, and the debug hook that blocks a loop on purpose (``BP_DEBUG_STALL_FILE``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

# Debug hook for the watchdog test: when the file named here appears, the service's loop deletes
# it and blocks for good (a restarted service does not block again). Read only by the CLI.
STALL_FILE_ENV = "BP_DEBUG_STALL_FILE"
WRITE_INTERVAL_S = 1.0
STACK_DUMP_SIGNAL = signal.SIGUSR1


class Progress:
    """What the loop last did, as wall-clock times (the supervisor is another process)."""

    def __init__(self) -> None:
        now = time.time()
        self.moved_at = now  # work moved: records consumed and published, entries read or acked
        self.idle_at = 0.0  # looked and found nothing waiting for this service
        self.waiting_at = 0.0  # a dependency was down and the loop is retrying it
        self.busy_until = 0.0  # inside a call bounded by its own timeouts until then (e.g. a DB write)
        self.partitions: list[int] | None = None  # Kafka partitions held (processors only)

    def moved(self) -> None:
        self.moved_at = time.time()

    def idle(self) -> None:
        self.idle_at = time.time()

    def waiting(self) -> None:
        self.waiting_at = time.time()

    @contextlib.contextmanager
    def inside(self, bound_s: float) -> Iterator[None]:
        """A call that its timeouts end within ``bound_s``: a frozen server is not this loop's stall.

        Restarting a service blocked in a call to a server that hangs would not bring the server
        back; once the bound has passed without the call returning, the bound itself failed and the
        watchdog counts the time again.
        """
        self.busy_until = time.time() + bound_s
        try:
            yield
        finally:
            self.busy_until = 0.0

    def record(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "written_at": time.time(),
            "moved_at": self.moved_at,
            "idle_at": self.idle_at,
            "waiting_at": self.waiting_at,
            "busy_until": self.busy_until,
            "partitions": self.partitions,
        }


class ProgressFile:
    """Writes a :class:`Progress` record to ``path`` every second, from a daemon thread."""

    def __init__(self, progress: Progress, path: Path, *, interval_s: float = WRITE_INTERVAL_S) -> None:
        self.progress = progress
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="progress-file")

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.progress.record()))
            tmp.replace(self.path)  # atomic: the reader never sees half a record
        except OSError as exc:  # a full disk must not stop the service; the watchdog sees it as silence
            log.warning("cannot write progress file %s: %s", self.path, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last record at ``path``, or None if there is none (yet) or it cannot be read."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def install_stack_dump() -> None:
    """On SIGUSR1, print every thread's stack to stderr (the supervisor's log), and go on running."""
    faulthandler.register(STACK_DUMP_SIGNAL, file=sys.stderr, all_threads=True)


class StallHook:
    """Blocks the calling loop for good once ``path`` exists (deleting it first); no-op without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    def from_env(cls) -> StallHook:
        value = os.environ.get(STALL_FILE_ENV)
        return cls(Path(value) if value else None)

    def __call__(self) -> None:
        if self.path is None or not self.path.exists():
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        log.error("stall hook (%s): blocking this loop for good", STALL_FILE_ENV)
        threading.Event().wait()  # never set: only a kill ends this


def progress_dir(state_dir: Path) -> Path:
    """Where services write their progress files and the supervisor its watchdog's verdicts."""
    return state_dir.resolve() / "progress"


def progress_path(state_dir: Path, service: str) -> Path:
    """The progress file of one supervised service (the supervisor passes it as ``--progress-file``)."""
    return progress_dir(state_dir) / f"{service}.json"
