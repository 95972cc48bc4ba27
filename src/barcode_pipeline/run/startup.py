"""The explicit start-up stage: wait for dependencies, migrate, create topics and groups."""

from __future__ import annotations

import logging
import ssl
import time
import urllib.error
import urllib.request

from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import StackError
from barcode_pipeline.plugins import local_stack_starter

log = logging.getLogger(__name__)


def prepare(settings: Settings, *, start_stack: bool = True) -> None:
    """Bring the local stack up if needed, apply migrations, create topics (all idempotent).

    ``start_stack`` only has an effect where the development harness is installed; a production
    install expects the servers named by ``BP_*`` to be running.
    """
    if start_stack and (start_local_stack := local_stack_starter()) is not None:
        start_local_stack(settings)
    from barcode_pipeline.db.migrate import upgrade

    applied = upgrade(settings.db.url)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    kafka_adapter.ensure_topics(settings)


def _probe_context() -> ssl.SSLContext:
    """A readiness probe of our own child on loopback: its certificate is for its clients, not checked."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_http_ok(url: str, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 2xx (service readiness)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            context = _probe_context() if url.startswith("https:") else None
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:  # loopback URL we built
                if 200 <= resp.status < 300:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StackError(f"{url} not ready after {timeout:.0f}s ({last})", component="ingest")
