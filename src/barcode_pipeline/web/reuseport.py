"""One listening socket per server process (SO_REUSEPORT), so the kernel spreads connections evenly.

uvicorn's supervisor hands every process the same listening socket. libuv accepts until the queue is
empty, so whichever process wakes first takes every waiting connection, and keep-alive clients stay
with it: at 2,000 req/s from ten connections one ingest process ran at 60 % of a core while its
sibling was idle, and its queue set the tail. Here each process slot listens on a socket of its own,
all bound to the same port with SO_REUSEPORT; the kernel picks a socket per new connection by a
hash of its addresses. A replacement for a dead process gets its slot's socket, which stays open in
the supervisor, so connections that arrived meanwhile wait in its queue rather than being refused.
"""

from __future__ import annotations

import logging
import socket
import sys

from prometheus_client import multiprocess as prom_multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from barcode_pipeline.web.metrics import multiprocess_enabled

log = logging.getLogger(__name__)


def bind_slots(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to one port; exits with uvicorn's start-up failure code if it is taken.

    A port held by another listener, even one that also set SO_REUSEPORT (an older instance of this
    service), must fail the start rather than silently share its connections: a plain bind tries it
    first. Port 0 picks a free port once, for every slot.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            if port == 0:
                port = probe.getsockname()[1]
        slots = []
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
            slots.append(sock)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    return slots


class SlotMultiprocess(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, graceful stop); process i listens on ``sockets[i]``."""

    def _spawn(self, index: int) -> Process:
        process = Process(self.config, [self.sockets[index]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._spawn(i) for i in range(len(self.sockets))]

    def keep_subprocess_alive(self) -> None:
        """uvicorn's own check, except that a replacement gets the slot's socket."""
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung, or already gone
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # the app or TLS is broken: a restart fails the same
                log.error("server process [%s] failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("server process [%s] died; starting its replacement", process.pid)
            if process.pid is not None and multiprocess_enabled():  # its live gauges leave with it
                prom_multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            self.processes[index] = self._spawn(index)

    def restart_all(self) -> None:
        """SIGHUP: replace each process in turn, the new one ready before the old one leaves."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn(index)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("replacement [%s] not ready in time; keeping [%s]", new.pid, old.pid)
                return
            old.terminate()
            old.join()
            self.processes[index] = new
