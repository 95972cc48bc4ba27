"""Pure parts of monitoring: scrape arithmetic, the top view on recorded snapshots, JSON logs, freshness."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from barcode_pipeline.domain import ScanEvent, StoredScan
from barcode_pipeline.logs import JsonFormatter, setup_logging
from barcode_pipeline.monitoring import scrape
from barcode_pipeline.monitoring.exporter import Bounds, Snapshot, metric_families
from barcode_pipeline.monitoring.top import build_view, render
from barcode_pipeline.probes.backlog import Backlog
from barcode_pipeline.processor.routing import to_stored
from barcode_pipeline.worker import metrics as worker_metrics

DATA = Path(__file__).parent / "data"  # /metrics of a live pipeline under load, 5 s apart
WORKERS = ["worker-1", "worker-2"]


def recorded(moment: str, taken_at: float) -> scrape.Sample:
    sample = scrape.Sample(taken_at=taken_at)
    for path in sorted((DATA / moment).glob("*.prom")):
        sample.up[path.stem] = True
        scrape.parse_into(sample, path.stem, path.read_text())
    return sample


def healthy_snapshot() -> Snapshot:
    backlog = Backlog(
        kafka_lag=3,
        kafka_lag_by_partition={0: 3},
        stream_undelivered={"barcode:stream:0": 0, "barcode:stream:1": 2},
        pending_by_consumer={"worker-1": 12, "worker-2": 0},
    )
    return Snapshot(backlog=backlog, workers_alive=WORKERS, kafka_up=True, redis_up=True, taken_at=1.0)


def text_of(view_renderable: object) -> str:
    console = Console(file=io.StringIO(), width=140, record=True, color_system=None)
    console.print(view_renderable)
    return console.export_text()


def test_quantile_interpolates_like_promql() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert scrape.quantile(0.5, buckets) == pytest.approx(0.1)
    assert scrape.quantile(0.7, buckets) == pytest.approx(0.3)
    assert scrape.quantile(0.99, buckets) == pytest.approx(0.95)
    assert scrape.quantile(0.99, {1.0: 0.0, float("inf"): 0.0}) is None
    assert scrape.quantile(0.99, {1.0: 0.0, float("inf"): 5.0}) == 1.0  # only +Inf: the top bound


def test_rate_survives_a_counter_reset() -> None:
    old, new = scrape.Sample(taken_at=0.0), scrape.Sample(taken_at=2.0)
    parse = scrape.parse_into
    parse(old, "worker-1", "# TYPE x_total counter\nx_total 100\n")
    parse(new, "worker-1", "# TYPE x_total counter\nx_total 10\n")  # restarted
    assert scrape.rate(old, new, "x_total") == pytest.approx(5.0)


def test_top_view_from_recorded_snapshots() -> None:
    old, new = recorded("t0", 0.0), recorded("t1", 5.0)
    view = build_view(old, new, healthy_snapshot(), WORKERS)
    ingest, processor, workers = view.stages
    accepted = scrape.total(new, "bp_ingest_accepted_total") - scrape.total(old, "bp_ingest_accepted_total")
    assert accepted > 0
    assert ingest.rate_out == pytest.approx(accepted / 5.0)
    assert processor.rate_out is not None and processor.rate_out > 0
    assert workers.rate_out is not None and workers.rate_out > 0
    assert view.ingest_p50_ms is not None and view.ingest_p99_ms is not None
    assert 0 < view.ingest_p50_ms <= view.ingest_p99_ms
    assert view.freshness_p99_s is not None and view.freshness_p99_s > 0
    assert view.warnings == []
    screen = text_of(render(view))
    for label in ("ingest", "processor", "workers", "kafka lag", "freshness p99", "pending per worker",
                  "worker-1: 12", "DLQ / DLT", "no warnings"):  # fmt: skip
        assert label in screen, label
    assert f"{accepted / 5.0:.0f}" in screen


def test_top_warns_about_stalls_missing_workers_and_dead_letters() -> None:
    same = recorded("t1", 0.0)
    later = recorded("t1", 5.0)  # nothing moved in 5 s
    later.up["worker-2"] = False
    snap = healthy_snapshot()
    snap.backlog.kafka_lag = 500
    snap.backlog.dlq_length = 4
    snap.workers_alive = ["worker-1"]
    view = build_view(same, later, snap, WORKERS)
    text = "\n".join(view.warnings)
    assert "worker-2: /metrics not answering" in text
    assert "worker missing (no heartbeat): worker-2" in text
    assert "processor stalled: kafka lag 500" in text
    assert "workers stalled" in text
    assert "dead letters: 4" in text
    assert "! processor stalled" in text_of(render(view))


def test_exporter_families_name_every_backlog_gauge() -> None:
    bounds = Bounds(kafka_retention_s=604_800, dlq_max_entries=1000)
    names = {family.name for family in metric_families(healthy_snapshot(), "barcode-processor", bounds)}
    assert {
        "bp_backlog_kafka_lag_records",
        "bp_backlog_stream_undelivered_entries",
        "bp_backlog_pending_entries",
        "bp_backlog_dlq_entries",
        "bp_backlog_dlt_records",
        "bp_backlog_probe_up",
        "bp_backlog_workers_alive",
        "bp_backlog_kafka_lag_age_seconds",
        "bp_backlog_kafka_log_age_seconds",
        "bp_backlog_kafka_retention_seconds",
        "bp_backlog_dlq_max_entries",
    } <= names
    down = Snapshot()  # nothing reached: only the probe's own gauges, saying so
    families = {f.name: f for f in metric_families(down, "g", bounds)}
    assert "bp_backlog_kafka_lag_records" not in families
    assert [s.value for s in families["bp_backlog_probe_up"].samples] == [0.0, 0.0]


def test_json_logs_are_one_object_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("worker[worker-2]"))
    logger = logging.getLogger("test.jsonlogs")
    logger.addHandler(handler)
    try:
        logger.warning("two\nlines %s", "here")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["service"] == "worker" and first["instance"] == "worker-2"
    assert first["event"] == "two\nlines here" and first["level"] == "WARNING" and first["pid"] > 0
    assert "ValueError: boom" in second["exception"]


def test_setup_logging_json_format(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO", "processor", "json")
    logging.getLogger("barcode_pipeline.test").info("hello")
    record = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["service"] == "processor" and record["event"] == "hello" and "instance" not in record


def test_ingest_time_travels_with_the_entry() -> None:
    event = ScanEvent("880123", "DEV-1", 1_795_000_000_000, "sid-1")
    stored = to_stored(event, "Asia/Seoul", 1_795_000_000_500, 1_795_000_000_100)
    assert StoredScan.from_entry(stored.to_entry()).ingest_time == 1_795_000_000_100
    old_entry = {  # one field per name, written before the JSON field and before "it" existed
        "id": stored.internal_barcode_id, "sid": stored.scan_id, "bc": stored.barcode,
        "dev": stored.device_id, "st": str(stored.scan_time), "pt": str(stored.processed_time),
    }  # fmt: skip
    assert StoredScan.from_fields(old_entry).ingest_time == 0


def _count(metric: object) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def test_freshness_observed_per_committed_row() -> None:
    fresh_before = _count(worker_metrics.FRESHNESS_SECONDS)
    ingest_before = _count(worker_metrics.INGEST_TO_COMMIT_SECONDS)
    scans = [
        StoredScan("DLV-1", "s1", "880", "DEV-1", 1_000_000, 1_000_500, 1_000_100),
        StoredScan("DLV-2", "s2", "880", "DEV-1", 1_000_000, 1_000_500, 0),  # ingest time unknown
    ]
    worker_metrics.observe_committed(scans, now_s=1_002.0)
    assert _count(worker_metrics.FRESHNESS_SECONDS) == fresh_before + 2
    assert _count(worker_metrics.INGEST_TO_COMMIT_SECONDS) == ingest_before + 1


def test_observe_many_matches_observe_one_by_one() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    values = [0.0, 0.01, 0.0100001, 0.3, 5.0, 9.99, 10.0, 4000.0, 0.05]
    buckets = worker_metrics.FRESHNESS_BUCKETS
    one, many = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h_seconds", "h", buckets=buckets, registry=one)
    bulk = Histogram("h_seconds", "h", buckets=buckets, registry=many)
    for value in values:
        single.observe(value)
    worker_metrics.observe_many(bulk, values)
    worker_metrics.observe_many(bulk, [])

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert samples(many) == samples(one)


def test_a_constant_fallback_is_stripped_before_a_panel_is_checked() -> None:
    from barcode_pipeline.monitoring.dashboards import PanelQuery

    query = PanelQuery("d", "p", "A", "sum(increase(bp_x_total[$__rate_interval])) or vector(0)")
    assert query.promql == "sum(increase(bp_x_total[1m]))"
    assert PanelQuery("d", "p", "A", "a or on() vector(0)").promql == "a"
    assert PanelQuery("d", "p", "A", "a or b").promql == "a or b"


def test_metric_names_of_a_rule() -> None:
    from barcode_pipeline.monitoring.dashboards import metric_names

    expr = (
        'max by (instance) (redis_memory_used_bytes{job="redis"} / (redis_memory_max_bytes > 0)) > 0.8 '
        "or histogram_quantile(0.99, sum by (le) (rate(bp_x_bucket[5m]))) > 1e3 and on() bp:rec:sum"
    )
    assert metric_names(expr) == {
        "redis_memory_used_bytes",
        "redis_memory_max_bytes",
        "bp_x_bucket",
        "bp:rec:sum",
    }
