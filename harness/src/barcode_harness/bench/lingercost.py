"""``bench linger``: what one produce request costs the broker, and how much a linger would batch.

The broker's CPU goes by produce request, not by scan. librdkafka puts one partition in each produce
request (its issue 1700, open), and ingest keys each scan by its device so that one device's scans stay
in one partition, in order. A linger therefore batches only the scans of one partition: spread over the
event topic's partitions it must cover several scans *per partition* before the broker's CPU per scan
falls. This measures, for each linger, keyed by device over as many partitions as the event topic and
on one partition, at a paced rate with ingest's producer settings (acks=all, idempotent, one request in
flight): scans per produce request (librdkafka's own statistics), the broker's and the producer
process's CPU per scan, and the round trip from ``produce()`` to the delivery report.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from barcode_harness import sections
from barcode_harness.bench import procstats, report
from barcode_harness.bench.ceilings import drop_probe_topic, ensure_topic, paced_round_trips
from barcode_harness.bench.docs import LINGER
from barcode_harness.bench.specs import LingerSpec
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.managers import manager_for
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)
say = report.progress_logger(__name__)

CLIENT = "producer process"


@dataclass(frozen=True)
class Layout:
    name: str
    topic: str
    partitions: int


class _Stats:
    """Produce requests and messages sent so far, from librdkafka's statistics (every 100 ms)."""

    def __init__(self) -> None:
        self.sent = (0, 0)  # (requests, messages), one value: a reader never mixes two reports

    def update(self, payload: str) -> None:
        stats = orjson.loads(payload)
        requests = sum(b.get("req", {}).get("Produce", 0) for b in stats["brokers"].values())
        self.sent = (requests, stats["txmsgs"])


def measure(
    settings: HarnessSettings, layout: Layout, linger_ms: float, spec: LingerSpec, roots: dict[str, list[int]]
) -> dict[str, Any]:
    """One paced run: ``spec.rate`` scans/s keyed by ``spec.devices`` devices, after ``warmup_s``."""
    stats, window = _Stats(), list[tuple[procstats.CpuSnapshot, tuple[int, int]]]()
    extra = {"linger.ms": linger_ms, "statistics.interval.ms": 100}
    producer = Producer(kafka_adapter.producer_config(settings, log_level=3, stats_cb=stats.update, **extra))

    def mark() -> None:
        """One edge of the measured window: a fresh statistics report (its callback runs in ``poll()``),
        then the CPU ticks and the requests and messages sent so far."""
        end = time.monotonic() + 0.25
        while time.monotonic() < end:
            producer.poll(0.05)
        window.append((procstats.snapshot(roots, rest=CLIENT), stats.sent))

    n = int(spec.rate * spec.duration_s)
    hist, failed = paced_round_trips(
        producer, layout.topic, rate=spec.rate, warm=int(spec.rate * spec.warmup_s), count=n,
        key=lambda k: b"dev-%d" % (k % spec.devices), at_window=mark,
    )  # fmt: skip
    mark()
    (cpu0, (requests0, messages0)), (cpu1, (requests1, messages1)) = window
    cpu_s = procstats.cpu_seconds(cpu0, cpu1)  # the window includes the flush
    requests, messages = requests1 - requests0, messages1 - messages0
    return {
        "layout": layout.name, "partitions": layout.partitions, "linger_ms": linger_ms, "sent": n,
        "failed": failed, "produce_requests": requests,
        "scans_per_request": round(messages / requests, 2) if requests else None,
        "broker_us_per_scan": round(cpu_s.get("kafka", 0.0) / n * 1e6, 1),
        "client_us_per_scan": round(cpu_s.get(CLIENT, 0.0) / n * 1e6, 1),
        "round_trip_ms": hist.summary().to_dict(),
    }  # fmt: skip


def run_linger(
    settings: HarnessSettings, spec: LingerSpec, folder: Path, *, start_stack: bool
) -> dict[str, Any]:
    manager = manager_for(settings)
    if start_stack:
        manager.up(quiet=True)
    roots = procstats.group_pids((), dict(manager.components))
    if "kafka" not in roots:
        raise PipelineError("bench linger needs the local stack's Kafka (its CPU is what it measures)")
    layouts = [
        Layout(f"keyed by device over {settings.kafka.topic_partitions} partitions", "bench.linger-keyed",
               settings.kafka.topic_partitions),
        Layout("one partition", "bench.linger-one", 1),
    ]  # fmt: skip
    alone = ("This run's producer, Kafka and the stack's other servers ran on this one machine and shared "
             f"its {os.cpu_count()} cores; no pipeline service ran.")  # fmt: skip
    env = report.environment(settings, {"preset": spec.preset, "spec": spec.to_dict(), "shared_cores": alone})
    runs: list[dict[str, Any]] = []
    try:
        for layout in layouts:
            ensure_topic(settings, layout.topic, layout.partitions)
        for r in range(spec.rounds):  # rounds outermost: a drift of the machine spreads over every cell
            for layout in layouts:
                for linger in spec.lingers_ms:
                    runs.append(measure(settings, layout, linger, spec, roots))
                    last = runs[-1]
                    say(f"round {r + 1} {layout.name}, linger {linger:g} ms: {last['scans_per_request']} "
                        f"scans a request, broker {last['broker_us_per_scan']} us a scan")  # fmt: skip
    finally:
        drop_probe_topic(settings, tuple(layout.topic for layout in layouts))
    result = {"command": "linger", "environment": report.finish_environment(env), "runs": runs,
              "cells": _medians(runs), "folder": str(folder)}  # fmt: skip
    report.write_json(folder / "linger.json", result)
    (folder / "linger.md").write_text(markdown(result))
    return result


def _medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per layout and linger, the median of the rounds."""
    cells: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["layout"], run["linger_ms"]), []).append(run)

    def median(rows: list[dict[str, Any]], key: str, inner: str = "") -> float | None:
        values = [v for row in rows if (v := row[key][inner] if inner else row[key]) is not None]
        return round(statistics.median(values), 2) if values else None

    return [
        {"layout": layout, "linger_ms": linger, "rounds": len(rows),
         "scans_per_request": median(rows, "scans_per_request"),
         "broker_us_per_scan": median(rows, "broker_us_per_scan"),
         "client_us_per_scan": median(rows, "client_us_per_scan"),
         "p50_ms": median(rows, "round_trip_ms", "p50_ms"), "p99_ms": median(rows, "round_trip_ms", "p99_ms"),
         "failed": sum(row["failed"] for row in rows)}
        for (layout, linger), rows in cells.items()
    ]  # fmt: skip


def _cheapest(cells: list[dict[str, Any]], layout: str, budget_us: float) -> str:
    """The shortest linger that brought the broker to ``budget_us`` a scan in ``layout``, with its p50."""
    fits = [c for c in cells if c["layout"] == layout and c["broker_us_per_scan"] is not None
            and c["broker_us_per_scan"] <= budget_us]  # fmt: skip
    if not fits:
        return f"none of the lingers measured brought it to {budget_us:g} µs"
    best = min(fits, key=lambda c: c["linger_ms"])
    return f"a linger of {best['linger_ms']:g} ms (round trip p50 {best['p50_ms']:.2f} ms)"


def markdown(result: dict[str, Any], budget_us: float = 100.0) -> str:
    """The section ``bench linger`` writes into the benchmarks page (``--doc``)."""
    env, spec, cells = result["environment"], result["environment"]["spec"], result["cells"]
    quick = " (**quick** preset: indicative only)" if spec["preset"] == "quick" else ""
    table = report.md_table(
        ("layout", "linger ms", "scans a produce request", "broker µs a scan", "producer process µs a scan",
         "round trip p50 / p99 ms", "failed"),
        [(c["layout"], c["linger_ms"], c["scans_per_request"], c["broker_us_per_scan"],
          c["client_us_per_scan"], f"{c['p50_ms']:.2f} / {c['p99_ms']:.2f}", c["failed"])
         for c in cells],
    )  # fmt: skip
    layouts = list(dict.fromkeys(c["layout"] for c in cells))
    cheapest = "\n".join(f"- {layout}: {_cheapest(cells, layout, budget_us)}." for layout in layouts)
    return "\n".join([
        LINGER[0],
        f"## `bench linger`: the broker's CPU per scan by producer linger{quick}",
        "",
        report.md_environment(env).replace("## Environment", "### Environment"),
        "",
        f"{spec['rate']:g} scans/s, paced, one `produce()` each, keyed by {spec['devices']} device IDs, with "
        f"ingest's producer settings and the linger shown; {spec['duration_s']:g} s per cell after "
        f"{spec['warmup_s']:g} s of warm-up, the median of {spec['rounds']} round(s). Scans per request come "
        "from librdkafka's statistics; the broker's CPU includes its idle work, the producer process's its "
        "pacing loop.",
        "",
        table,
        "",
        f"The shortest linger that brought the broker to {budget_us:g} µs a scan or less:",
        "",
        cheapest,
        "",
        f"_Source: `{result['folder']}`._",
        LINGER[1],
    ])  # fmt: skip


def write_section(doc: Path, section: str) -> Path:
    """Replace (or append) the linger section of ``doc``; ``bench docs`` carries it over."""
    return sections.write(doc, section, LINGER, "# Benchmarks")
