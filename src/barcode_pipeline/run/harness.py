"""A running pipeline for the demo, benchmarks and fault injection: start, wait, drain, stop."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.ops.backlog import Backlog, measure
from barcode_pipeline.run.startup import prepare, wait_http_ok
from barcode_pipeline.run.supervisor import ChildSpec, Supervisor, pipeline_specs

log = logging.getLogger(__name__)


@contextmanager
def running_pipeline(
    settings: Settings,
    *,
    log_path: Path,
    workers: int | None = None,
    specs: list[ChildSpec] | None = None,
    start_stack: bool = True,
    health_port: int | None = None,
) -> Iterator[Supervisor]:
    """Prepare (stack, migrations, topics), start ingest + processor + workers, yield, then drain."""
    prepare(settings, start_stack=start_stack)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as out:
        specs = specs or pipeline_specs(settings, workers=workers, metrics=False)
        sup = Supervisor(settings, specs, out=out, health_port=health_port)
        sup.start()
        try:
            wait_http_ok(f"http://{settings.ingest_host}:{settings.ingest_port}/ready", timeout=60)
            yield sup
        finally:
            sup.stop()


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
