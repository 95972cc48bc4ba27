"""One way to serve an HTTP service: uvicorn (uvloop + httptools), one or several processes on one port.

Several processes use uvicorn's own supervisor: the parent binds one socket per process (see
``web.reuseport``) and spawns the workers, restarts a worker that dies, and on SIGTERM/SIGINT
forwards SIGTERM to each. A worker then
stops accepting, finishes its in-flight requests and runs the app's shutdown (ingest flushes its
producer, legacy closes its pool). Every service gets the same process settings from here.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from barcode_pipeline.logs import setup_logging
from barcode_pipeline.web.headguard import GuardedHttpToolsProtocol
from barcode_pipeline.web.metrics import multiprocess_metrics_dir
from barcode_pipeline.web.reuseport import SlotMultiprocess, bind_slots

log = logging.getLogger(__name__)

# The delivery-report thread needs the GIL to hand a confirmation to the event loop; with the default
# 5 ms switch interval it can wait that long behind a busy loop. 0.5 ms measurably cut the ingest p99
# (about 4-7 ms -> 2.5 ms server-side at 1,000 req/s) for a negligible throughput cost.
GIL_SWITCH_INTERVAL_S = 0.0005
# A request allocates many short-lived containers, so with Python's default thresholds (700, 10, 10)
# the cyclic collector ran every few dozen requests: 9% of the ingest loop's samples at 2,000 req/s
# (py-spy). Start-up objects are frozen out of every collection; the young generation is collected
# after 20,000 allocations instead of 700 (cycles are still reclaimed, a little later).
GC_THRESHOLDS = (20_000, 20, 20)
WORKER_HEALTHCHECK_S = 30
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class ServerSpec:
    """What to serve where. ``app_factory`` must be picklable (a ``functools.partial`` of a module-level
    function): each server process builds its own app from it."""

    name: str  # "ingest", "legacy": the log prefix and the metrics directory's name
    host: str
    port: int
    processes: int
    app_factory: Callable[[], FastAPI]
    graceful_shutdown_s: int  # how long in-flight requests may take to finish on SIGTERM
    log_level: str = "INFO"
    log_format: str = "text"  # "json": one object per line (BP_LOG_FORMAT)
    tls_cert: Path | None = None  # PEM chain; with tls_key, the port speaks HTTPS only
    tls_key: Path | None = None
    proxies: str = ""  # whose X-Forwarded-For is believed (BP_INGEST_PROXIES); "": nobody's

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"


def build_process_app(spec: ServerSpec) -> FastAPI:
    """Run inside each server process: logging, supervision and GIL settings, then the app."""
    setup_logging(spec.log_level, f"{spec.name}[{os.getpid()}]", spec.log_format)
    _stop_with_supervisor()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app = spec.app_factory()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return app


def _stop_with_supervisor() -> None:
    """In a spawned worker: get SIGTERM (a graceful drain) if the supervising parent dies.

    Without this a SIGKILLed parent leaves its workers running unsupervised and holding the port,
    so a restarted service could not bind it.
    """
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent.pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _exit_after_drain(_signum: int, _frame: FrameType | None) -> None:
    """uvicorn re-raises a handled SIGTERM once it has drained; a stop on request is a clean exit (0)."""
    raise SystemExit(0)


def uvicorn_config(spec: ServerSpec) -> uvicorn.Config:
    return uvicorn.Config(
        partial(build_process_app, spec),
        factory=True,
        host=spec.host,
        port=spec.port,
        workers=spec.processes,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,  # httptools, bounded heads (web.headguard), one write per response
        lifespan="on",
        access_log=False,  # a log line per request would cost more than the rest of the request
        log_config=None,  # keep the pipeline's logging format (setup_logging)
        server_header=False,
        backlog=4096,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=spec.graceful_shutdown_s,
        # The parent kills a child that does not answer its ping within this. uvicorn's 5 s killed
        # healthy children that were still importing on a loaded 2-core machine; 30 s matches the
        # pipeline's own stall timeout.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
        ssl_certfile=spec.tls_cert,
        ssl_keyfile=spec.tls_key,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: only from our proxies.
        proxy_headers=bool(spec.proxies),
        forwarded_allow_ips=spec.proxies or None,
    )


def raise_descriptor_limit() -> int:
    """The soft limit on open descriptors raised to the hard one; returns it. Each client connection
    holds one: at the usual soft 1,024, about a thousand idle or slow clients per process would make
    the server refuse everyone else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def serve(spec: ServerSpec) -> None:
    """Serve until SIGTERM/SIGINT, then drain gracefully."""
    raise_descriptor_limit()
    if spec.processes == 1:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_after_drain)
        uvicorn.Server(uvicorn_config(spec)).run()
        return
    with multiprocess_metrics_dir(f"bp-{spec.name}-metrics-"):
        config = uvicorn_config(spec)
        slots = bind_slots(spec.host, spec.port, spec.processes)
        try:
            SlotMultiprocess(config, sockets=slots).run()
        finally:
            for sock in slots:
                sock.close()
