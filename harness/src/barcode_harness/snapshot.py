"""``barcode-pipeline monitor snapshot``: the key series of the last N minutes from Prometheus as one
PNG, the picture an operator needs without Grafana."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer

from barcode_harness.bench.charts import Line, Panel, time_chart
from barcode_harness.settings import load_harness_settings
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.logs import setup_logging

# (panel y label, [(legend, PromQL)]); one stacked panel each.
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("scans/s", [
        ("ingest accepted", "sum(rate(bp_ingest_accepted_total[1m]))"),
        ("processor published", 'sum(rate(bp_processor_events_total{outcome="published"}[1m]))'),
        ("workers stored", "sum(rate(bp_worker_rows_inserted_total[1m]))"),
    ]),
    ("ingest p99 (ms)", [
        ("p99", "1000 * histogram_quantile(0.99, sum by (le) (rate(bp_ingest_request_seconds_bucket[1m])))"),
    ]),
    ("backlog", [
        ("kafka lag", "sum(bp_backlog_kafka_lag_records)"),
        ("stream undelivered", "sum(bp_backlog_stream_undelivered_entries)"),
        ("pending", "sum(bp_backlog_pending_entries)"),
    ]),
    ("freshness (s)", [
        ("p50", "histogram_quantile(0.5, sum by (le) (rate(bp_worker_freshness_seconds_bucket[1m])))"),
        ("p99", "histogram_quantile(0.99, sum by (le) (rate(bp_worker_freshness_seconds_bucket[1m])))"),
    ]),
    ("dead letters", [
        ("DLQ stream", "max(bp_backlog_dlq_entries)"),
        ("Kafka DLT", "max(bp_backlog_dlt_records)"),
    ]),
    ("redo-log writes/s", [
        ("InnoDB log writes", "sum(rate(mysql_global_status_innodb_log_writes[1m]))"),
    ]),
]  # fmt: skip


Series = tuple[str, list[tuple[float, float]]]  # (legend, [(epoch s, value)]), NaN dropped


def query_range(base_url: str, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": promql, "start": start, "end": end, "step": f"{step:g}"})
    try:
        with urllib.request.urlopen(f"{base_url}/api/v1/query_range?{params}", timeout=30) as resp:
            body: dict[str, Any] = json.loads(resp.read())  # a loopback URL built from settings
    except OSError as exc:
        raise PipelineError(
            f"Prometheus at {base_url} did not answer: {exc}", component="prometheus"
        ) from exc
    if body.get("status") != "success":
        raise PipelineError(f"query failed: {promql}: {body.get('error')}", component="prometheus")
    return list(body["data"]["result"])


def snapshot(base_url: str, path: Path, minutes: float) -> tuple[Path, int]:
    """Fetch the panels' series and draw one stacked chart (x: minutes before the last sample); returns
    the PNG and how many series had data."""
    end = time.time()
    step = max(1.0, minutes * 60 / 300)
    panels: list[tuple[str, list[Series]]] = []
    for ylabel, queries in PANELS:
        series = []
        for label, promql in queries:
            for result in query_range(base_url, promql, end - minutes * 60, end, step):
                points = [(float(t), float(v)) for t, v in result["values"] if not math.isnan(float(v))]
                series.append((label, points))
        panels.append((ylabel, series))
    last = max((t for _, series in panels for _, points in series for t, _ in points), default=0.0)
    chart = [
        Panel(ylabel, [Line(name, [(t - last) / 60 for t, _ in p], [v for _, v in p]) for name, p in lines])
        for ylabel, lines in panels
    ]
    count = sum(1 for _, series in panels for _, points in series if points)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"barcode-pipeline, last {minutes:g} min"
    return time_chart(path, title, chart, xlabel="minutes (0 = now)"), count


def snapshot_command(
    minutes: Annotated[float, typer.Option(help="How far back.", min=1)] = 15.0,
    out: Annotated[Path | None, typer.Option(help="PNG path (default: BP_STATE_DIR/snapshots/).")] = None,
    url: Annotated[str | None, typer.Option(help="Prometheus base URL (default: the local one).")] = None,
) -> None:
    """Plot the key series of the last N minutes from Prometheus to a PNG (no Grafana needed)."""
    settings = load_harness_settings()
    setup_logging("WARNING", "snapshot")
    base = url or f"http://127.0.0.1:{settings.monitoring.prometheus_port}"
    path = out or settings.state_dir / "snapshots" / time.strftime("%Y%m%dT%H%M%S.png")
    png, count = snapshot(base, path, minutes)
    typer.echo(f"{png} ({count} series with data)")


def register(app: typer.Typer) -> None:
    """Add ``snapshot`` to the product's ``monitor`` group (registered before the harness's commands)."""
    monitor = next(group.typer_instance for group in app.registered_groups if group.name == "monitor")
    assert monitor is not None
    monitor.command("snapshot")(snapshot_command)
