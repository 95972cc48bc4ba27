"""``barcode-pipeline top``: a live terminal view of the pipeline, refreshed every second.

It needs no Prometheus: it reads every service's ``/metrics`` itself and runs the backlog probes
(monitoring/exporter.py) in a background thread. :func:`build_view` is pure (two samples and a
backlog snapshot in, numbers and warnings out) and :func:`render` turns that into rich tables, so
both are tested on recorded snapshots.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.monitoring import scrape
from barcode_pipeline.monitoring.exporter import Snapshot, probe
from barcode_pipeline.monitoring.targets import Target, pipeline_targets

WINDOW_S = 5.0  # rates and percentiles over the last few seconds: steady, yet live


@dataclass
class StageRow:
    stage: str
    rate_in: float | None  # per second
    rate_out: float | None
    backlog: str
    note: str = ""


@dataclass
class View:
    stages: list[StageRow] = field(default_factory=list)
    ingest_p50_ms: float | None = None
    ingest_p99_ms: float | None = None
    freshness_p99_s: float | None = None
    kafka_lag: int = 0
    stream_backlog: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    dlq: int = 0
    dlt: int = 0
    services: dict[str, bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def build_view(old: scrape.Sample, new: scrape.Sample, snap: Snapshot, workers: list[str]) -> View:
    """The numbers on screen, from two samples ``WINDOW_S`` apart and the latest backlog probe."""
    b = snap.backlog
    view = View(services=dict(new.up))
    accepted = scrape.rate(old, new, "bp_ingest_accepted_total")
    requests = scrape.rate(old, new, "bp_ingest_request_seconds_count")
    errors = sum(
        scrape.rate(old, new, "bp_ingest_request_seconds_count", status=str(code)) for code in (500, 503)
    )
    published = scrape.rate(old, new, "bp_processor_events_total", outcome="published")
    duplicates = scrape.rate(old, new, "bp_processor_events_total", outcome="duplicate")
    consumed = published + duplicates + scrape.rate(old, new, "bp_processor_events_total", outcome="dlt")
    stored = scrape.rate(old, new, "bp_worker_rows_inserted_total")
    absorbed = scrape.rate(old, new, "bp_worker_duplicates_total")
    undelivered = sum(b.stream_undelivered.values())
    pending = sum(b.pending_by_consumer.values())
    view.stages = [
        StageRow("ingest", requests, accepted, "-", f"5xx {errors:.0f}/s" if errors else ""),
        StageRow(
            "processor", consumed, published, f"kafka lag {b.kafka_lag}", f"dedup hits {duplicates:.0f}/s"
        ),
        StageRow(
            "workers",
            stored + absorbed,
            stored,
            f"undelivered {undelivered}, pending {pending}",
            f"duplicates {absorbed:.0f}/s" if absorbed else "",
        ),
    ]
    view.ingest_p50_ms = _ms(scrape.quantile(0.5, scrape.bucket_delta(old, new, "bp_ingest_request_seconds")))
    view.ingest_p99_ms = _ms(
        scrape.quantile(0.99, scrape.bucket_delta(old, new, "bp_ingest_request_seconds"))
    )
    view.freshness_p99_s = scrape.quantile(0.99, scrape.bucket_delta(old, new, "bp_worker_freshness_seconds"))
    view.kafka_lag = b.kafka_lag
    view.stream_backlog = dict(b.stream_undelivered)
    view.pending = dict(b.pending_by_consumer)
    view.dlq = b.dlq_length
    view.dlt = snap.dlt_records
    view.warnings = _warnings(view, snap, workers, published=published, stored=stored + absorbed)
    return view


def _warnings(
    view: View, snap: Snapshot, workers: list[str], *, published: float, stored: float
) -> list[str]:
    out = list(snap.backlog.errors)
    for service, up in sorted(view.services.items()):
        if not up and service != "legacy":
            out.append(f"{service}: /metrics not answering")
    if snap.taken_at and snap.redis_up:
        missing = [w for w in workers if w not in snap.workers_alive]
        if missing:
            out.append(f"worker missing (no heartbeat): {', '.join(missing)}")
    if snap.kafka_up and view.kafka_lag > 0 and published == 0 and view.services.get("processor", True):
        out.append(f"processor stalled: kafka lag {view.kafka_lag} and nothing published")
    waiting = sum(view.stream_backlog.values()) + sum(view.pending.values())
    if snap.redis_up and waiting > 0 and stored == 0:
        out.append(f"workers stalled: {waiting} entries waiting and nothing stored")
    if view.dlq or view.dlt:
        out.append(f"dead letters: {view.dlq} in the DLQ stream, {view.dlt} in the Kafka DLT")
    return out


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def render(view: View, *, title: str = "barcode-pipeline top") -> RenderableType:
    stages = Table(title=title, expand=True)
    for col, justify in (("stage", "left"), ("in /s", "right"), ("out /s", "right"), ("backlog", "left"),
                         ("", "left")):  # fmt: skip
        stages.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in view.stages:
        stages.add_row(row.stage, _num(row.rate_in), _num(row.rate_out), row.backlog, row.note)
    figures = Table(show_header=False, expand=True, box=None)
    figures.add_column("measure")
    figures.add_column("value", justify="right")
    figures.add_row("ingest latency p50 / p99", f"{_num(view.ingest_p50_ms, '{:.1f}')} / "
                    f"{_num(view.ingest_p99_ms, '{:.1f}')} ms")  # fmt: skip
    figures.add_row("freshness p99 (scanTime to stored)", f"{_num(view.freshness_p99_s, '{:.2f}')} s")
    figures.add_row("kafka lag (processor group)", str(view.kafka_lag))
    figures.add_row(
        "stream backlog (undelivered)",
        ", ".join(f"{s.rsplit(':', 1)[-1]}: {n}" for s, n in sorted(view.stream_backlog.items())) or "-",
    )
    figures.add_row(
        "pending per worker", ", ".join(f"{w}: {n}" for w, n in sorted(view.pending.items())) or "-"
    )
    figures.add_row("DLQ / DLT", f"{view.dlq} / {view.dlt}")
    figures.add_row(
        "services",
        " ".join(f"[{'green' if up else 'red'}]{name}[/]" for name, up in sorted(view.services.items())),
    )
    parts: list[RenderableType] = [stages, figures]
    if view.warnings:
        parts.append(Text("\n".join(f"! {w}" for w in view.warnings), style="bold yellow"))
    else:
        parts.append(Text("no warnings", style="green"))
    parts.append(Text("Ctrl-C to quit", style="dim"))
    return Group(*parts)


class BacklogPoller:
    """Runs the backlog probes in a thread, so a slow or down Kafka never freezes the screen."""

    def __init__(self, settings: Settings, interval_s: float = 1.0) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.latest = Snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="top-backlog")

    def __enter__(self) -> BacklogPoller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.latest = probe(self.settings)
            self._stop.wait(self.interval_s)


def run_top(
    settings: Settings,
    *,
    refresh_s: float = 1.0,
    iterations: int | None = None,
    console: Console | None = None,
) -> View:
    """Show the live view until Ctrl-C (or ``iterations`` refreshes); returns the last view.

    On a terminal the screen updates in place; piped, every refresh prints one frame.
    """
    console = console or Console()
    targets: list[Target] = pipeline_targets(settings, legacy=False)
    # Heartbeats are keyed by consumer name, which carries the node name (run/supervisor.py).
    workers = [names.node_member(settings.node_name, t.name) for t in targets if t.job == names.JOB_WORKER]
    samples: deque[scrape.Sample] = deque()
    view = View()
    live = Live(render(view), console=console, refresh_per_second=4) if console.is_terminal else None
    with BacklogPoller(settings) as poller, live or contextlib.nullcontext():
        count = 0
        try:
            while iterations is None or count < iterations:
                started = time.monotonic()
                samples.append(scrape.take(targets))
                while len(samples) > 2 and samples[-1].taken_at - samples[1].taken_at >= WINDOW_S:
                    samples.popleft()
                view = build_view(samples[0], samples[-1], poller.latest, workers)
                if live is not None:
                    live.update(render(view))
                else:
                    console.print(render(view))
                    console.file.flush()
                count += 1
                time.sleep(max(0.0, refresh_s - (time.monotonic() - started)))
        except KeyboardInterrupt:
            pass  # Ctrl-C is the normal way out
    return view
