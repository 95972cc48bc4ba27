"""A running pipeline, as ``run``, the demo, the benchmarks and fault injection all start it."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.probes.backlog import Backlog, measure
from barcode_pipeline.run.lease import NodeLease
from barcode_pipeline.run.retention import RetentionKeeper
from barcode_pipeline.run.startup import prepare, wait_http_ok
from barcode_pipeline.run.supervisor import ChildSpec, Supervisor, pipeline_specs

log = logging.getLogger(__name__)


@contextmanager
def running_pipeline(
    settings: Settings,
    *,
    log_path: Path | None = None,
    workers: int | None = None,
    specs: Sequence[ChildSpec] | None = None,
    metrics: bool = False,
    start_stack: bool = True,
    ready_timeout_s: float = 60.0,
    stop_on_signals: bool = False,
    health_port: int | None = None,
) -> Iterator[Supervisor]:
    """The one start-up path (``run``, demo, chaos, bench): prepare, start, wait until ready, yield, drain.

    ``log_path`` gets the children's lines as they come (line-buffered, so a fault timeline written
    to the same file stays in order); without it they go to stderr. ``stop_on_signals`` makes
    SIGTERM/SIGINT end :meth:`Supervisor.wait_forever` from the moment the children exist, so a
    signal during start-up still drains them instead of orphaning them. ``health_port``: the
    supervisor serves the liveness watchdog's /health and /metrics there.
    """
    prepare(settings, start_stack=start_stack)
    with ExitStack() as cleanup:
        out: IO[str] = sys.stderr
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = cleanup.enter_context(log_path.open("a", buffering=1))
        chosen = specs if specs is not None else pipeline_specs(settings, workers=workers, metrics=metrics)
        if any(s.role in (names.Role.PROCESSOR, names.Role.WORKER) for s in chosen):
            # Their names derive from the node name: a second `run` of this node is refused here.
            lease = NodeLease(settings)
            lease.acquire()
            cleanup.callback(lease.release)
        if any(s.role is names.Role.WORKER for s in chosen):
            keeper = RetentionKeeper(settings)  # the table's partitions, ahead and past retention
            keeper.start()
            cleanup.callback(keeper.stop)
        sup = Supervisor(settings, chosen, out=out, health_port=health_port)
        if stop_on_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda _s, _f: sup.request_stop())
        sup.start()
        try:
            for url in ready_urls(settings, sup):
                wait_http_ok(url, timeout=ready_timeout_s)
            yield sup
        finally:
            sup.stop()


def ready_urls(settings: Settings, sup: Supervisor) -> list[str]:
    """The readiness endpoints of the HTTP services among the supervisor's children."""
    roles = {child.spec.role for child in sup.children.values()}
    urls = []
    if names.Role.INGEST in roles:
        scheme = "https" if settings.ingest.tls_cert is not None else "http"
        urls.append(f"{scheme}://{settings.ingest.host}:{settings.ingest.port}{names.ROUTE_READY}")
    if names.Role.LEGACY in roles:
        urls.append(f"http://{settings.legacy.host}:{settings.legacy.port}{names.ROUTE_READY}")
    return urls


def wait_drained(
    settings: Settings, *, timeout: float = 60.0, settle_s: float = 0.5
) -> tuple[float, Backlog]:
    """Wait until nothing is in flight (Kafka lag, undelivered and pending entries all zero).

    Returns the seconds it took and the last backlog seen; raises if ``timeout`` passes.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        backlog = measure(settings)
        if backlog.in_flight == 0 and not backlog.errors:
            # Confirm once more a moment later: a batch may sit between two stages.
            time.sleep(settle_s)
            again = measure(settings)
            if again.in_flight == 0 and not again.errors:
                return time.monotonic() - t0, again
        if time.monotonic() > deadline:
            raise PipelineError(f"pipeline not drained after {timeout:.0f}s: {backlog.to_dict()}")
        time.sleep(0.2)
