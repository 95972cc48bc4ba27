"""The metrics base of every HTTP service: a registry per app, request timing, multi-process mode.

One metrics object per app instance (not module globals), so tests get fresh counters. With several
server processes ``PROMETHEUS_MULTIPROC_DIR`` is set before they start: every process then writes
its samples to files there, and a scrape of any process aggregates them all.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import multiprocess as prom_multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_enabled() -> bool:
    return MULTIPROC_ENV in os.environ or MULTIPROC_ENV.lower() in os.environ


class ServiceMetrics:
    """What both HTTP services (ingest, legacy) have: the registry ``/metrics`` renders, and request
    latency by route and status. Subclasses register their own instruments with ``self._target``."""

    def __init__(self, service: str, buckets: tuple[float, ...]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        multiproc = multiprocess_enabled()
        # In multiprocess mode samples live in files and the collector reads them; registering the
        # instruments as well would report this process's share twice.
        self._target = None if multiproc else self.registry
        if multiproc:
            prom_multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.request_seconds = Histogram(
            f"bp_{service}_request_seconds",
            "HTTP request latency, from first byte handled to response sent.",
            ["route", "status"],
            buckets=buckets,
            registry=self._target,
        )
        self._request_children: dict[tuple[str, int], Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Record one request; label children are cached because ``labels()`` costs a lock and a lookup."""
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.request_seconds.labels(route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI middleware (no per-request Request object) timing every request by route and status.

    Paths outside ``routes`` are labelled "other" to keep the label set bounded.
    """

    skips_hot_paths = True  # the scan endpoints are timed by ServiceApp itself

    def __init__(
        self, app: ASGIApp, observe: Callable[[str, int, float], None], routes: frozenset[str]
    ) -> None:
        self.app = app
        self.observe = observe
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.observe(route, status, time.perf_counter() - started)


@contextmanager
def multiprocess_metrics_dir(prefix: str) -> Iterator[Path]:
    """A metrics directory shared by the workers; must be set before they import prometheus_client.

    An operator-provided directory is reused but emptied (prometheus_client requires a clean one
    per run); otherwise a private temporary one is created and removed afterwards.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
