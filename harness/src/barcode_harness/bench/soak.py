"""``bench soak``: a steady load for as long as asked, every store's slope, and flatness checks.

A run of minutes cannot show a leak or a store that grows faster than planned. The soak drives a
realistic mix (single scans, batches, a few percent resends), samples every ``sample_s``, fits each
store's slope after the warm-up and judges the targets of :func:`judge` (the servers' memory is their
data: judged by bytes per scan, not by RSS growth)."""

from __future__ import annotations

import itertools
import logging
import math
import random
import shutil
import statistics
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from barcode_harness import sections
from barcode_harness.bench import report
from barcode_harness.bench.charts import Line, Panel, time_chart
from barcode_harness.bench.docs import markers
from barcode_harness.bench.env import BenchRun
from barcode_harness.bench.histogram import LatencyHistogram, TimeSeries
from barcode_harness.bench.loadgen import LoadResult, LoadSpec, ScanBodies
from barcode_harness.bench.loads import ParallelLoads, acked_ids, scan_window, spec_for
from barcode_harness.bench.soaksample import SUPERVISOR, Sample, SoakSampler
from barcode_harness.bench.specs import SoakSpec
from barcode_harness.scanner.scans import encode_batch
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.ops import capacity
from barcode_pipeline.ops.verify import verify_scan_ids

log = logging.getLogger(__name__)

SECTION = markers("soak")
BATCH_MIN = 10
SERVICE_GROUPS = ("ingest", "processor", "workers")  # our code: where a leak would be
PIPELINE_GROUPS = (*SERVICE_GROUPS, SUPERVISOR)
RSS_GROWTH_MAX = 0.10
TAIL_GROWTH_MAX = 2.0  # last quarter's p99 / first quarter's
# A quarter shorter than this holds too few slow answers to compare tails: the quick soak's 8 s
# quarters put a p99 on ~20 answers, and one scheduling hiccup on a shared CI machine made it 3x.
TAIL_JUDGED_QUARTER_S = 120.0
ROW_BYTES_MAX = 300.0  # issue 27's goal
TABLE_GROWTH_JUDGED = 64 * 2**20
REDIS_STEADY_MAX = 3 * capacity.GIB  # issue 26's goal, at 1,000 scans/s


class VariableBatches(ScanBodies):
    """Batch bodies of ``BATCH_MIN`` to ``spec.batch_size`` scans, as scanners catching up send them."""

    def __init__(self, spec: LoadSpec, worker: int, workers: int, token: str) -> None:
        super().__init__(spec, worker, workers, token)
        self._sizes = random.Random(f"{token}-{worker}")

    def make(self) -> tuple[bytes, list[str]]:
        scans = [self._factory.next() for _ in range(self._sizes.randint(BATCH_MIN, self._batch))]
        return encode_batch(scans), [s.scan_id for s in scans]


def load_specs(spec: SoakSpec, url: str, out: Path, api_key: str) -> list[LoadSpec]:
    """The single-scan load and the batch load that together make ``spec.rate`` scans/s."""
    batch_scans = spec.rate * spec.batch_share
    mean_batch = (BATCH_MIN + spec.batch_max) / 2
    single = spec_for(url, rate=spec.rate - batch_scans, duration_s=spec.duration_s, processes=1,
                      acked=out / "acked-single.txt", api_key=api_key)  # fmt: skip
    batch = spec_for(url, rate=batch_scans / mean_batch, duration_s=spec.duration_s, processes=1,
                     mode="batch", batch_size=spec.batch_max, acked=out / "acked-batch.txt", concurrency=64,
                     api_key=api_key)  # fmt: skip
    window = max(1, round(spec.sample_s))
    loads = (single, replace(batch, body_factory=VariableBatches))
    return [replace(load, duplicate_ratio=spec.resend_ratio, window_s=window) for load in loads]


# --------------------------------------------------------------------------- analysis (pure)
def slope_per_s(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (t, value); 0 with fewer than two distinct times."""
    if len({t for t, _ in points}) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope


def written_per_s(points: Sequence[tuple[float, float]]) -> float:
    """Bytes written per second by a file that is rewritten smaller now and then: rises only."""
    if len(points) < 2:
        return 0.0
    rises = sum(max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(points))
    return rises / (points[-1][0] - points[0][0])


def quarters(items: Sequence[Any]) -> list[Sequence[Any]]:
    n = len(items)
    return [items[n * i // 4 : n * (i + 1) // 4] for i in range(4)]


def rss_growth(samples: Sequence[Sample], group: str) -> float | None:
    """Growth of a group's RSS from the end of the warm-up to the end (medians of three readings)."""
    values = [s.groups[group].rss_bytes for s in samples if group in s.groups]
    if len(values) < 6:
        return None
    first, last = statistics.median(values[:3]), statistics.median(values[-3:])
    return (last - first) / first if first else None


def fds_keep_growing(samples: Sequence[Sample], group: str) -> bool:
    """The floor of open descriptors higher in every quarter than the one before: a leak, not a step.
    Not the peak: open-loop clients open more connections whenever answers slow down (2026-12-07's
    hour: ingest peaks 160, 208, 218, 334 by quarter, floors 98, 97, 97, 95)."""
    values = [s.groups[group].fds for s in samples if group in s.groups]
    if len(values) < 8:
        return False
    floors = [min(q) for q in quarters(values)]
    return all(b > a for a, b in itertools.pairwise(floors))


def tail_growth(windows: Sequence[tuple[int, LatencyHistogram]]) -> tuple[float, float]:
    """p99 (ms) of the first and the last quarter of the windows after the warm-up."""
    parts = quarters(windows)
    return p99_ms(parts[0]), p99_ms(parts[-1])


def p99_ms(windows: Sequence[tuple[int, LatencyHistogram]]) -> float:
    """The p99 of the windows merged (exact: histograms add up, percentiles do not); 0 for none."""
    total = LatencyHistogram(2)
    for _, hist in windows:
        total.add(hist)
    return total.percentile_us(99.0) / 1000 if total.count else 0.0


# --------------------------------------------------------------------------- the run
def _latency_windows(loads: list[LoadResult], start: float) -> list[tuple[int, LatencyHistogram]]:
    """Both loads' windows merged (exact), keyed by seconds from ``start``."""
    merged = TimeSeries()
    for load in loads:
        shift = round(load.started_at - start)
        width = load.spec.window_s
        merged.add_encoded(
            (second + shift - (second + shift) % width, count, ok, errors, hist)
            for second, count, ok, errors, hist in load.windows
        )
    return [(second, hist) for second, hist in merged.histograms().items() if second >= 0]


def freshness_windows(
    settings: HarnessSettings, devices: Sequence[str], start: float, width: int
) -> list[tuple[int, LatencyHistogram]]:
    """Scan time to row committed, per window of scan time, for every row the run stored."""
    since = datetime.fromtimestamp(start - 60, UTC).replace(tzinfo=None)
    origin = datetime.fromtimestamp(start, UTC).replace(tzinfo=None)
    windows: dict[int, LatencyHistogram] = {}
    with closing(connect(settings.db.url, autocommit=True)) as conn, conn.cursor() as cur:
        for device in devices:
            cur.execute(
                "SELECT TIMESTAMPDIFF(SECOND, %s, scan_time),"
                " TIMESTAMPDIFF(MICROSECOND, scan_time, saved_time)"
                " FROM barcodes WHERE device_id = %s AND scan_time >= %s",
                (origin, device, since),
            )
            for offset, fresh_us in cur.fetchall():
                if offset < 0:  # scanned before the run's clock started (the window's slack)
                    continue
                key = int(offset) - int(offset) % width
                windows.setdefault(key, LatencyHistogram(2)).record_us(max(1, int(fresh_us)))
    return sorted(windows.items())


def _bounds(settings: HarnessSettings) -> dict[str, float]:
    """What each store may grow to on this machine: Redis's maxmemory, the disk under the stack."""
    with closing(redis_adapter.client(settings)) as client:
        maxmemory = redis_adapter.maxmemory(client) or capacity.GIB * 4
    free = float(shutil.disk_usage(settings.state_dir).free)
    redis_keys = ("redis_used_bytes", "redis_markers_bytes", "redis_streams_bytes", "redis_dlq_bytes")
    return {
        **dict.fromkeys(redis_keys, float(maxmemory)),
        **dict.fromkeys(("redis_aof_bytes", "kafka_bytes", "table_bytes"), free),
        "dlq_entries": float(settings.streams.dlq_max_entries),
    }


def stores(samples: Sequence[Sample], spec: SoakSpec, bounds: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per store: slope, bytes per scan (per unique scan; Kafka: per scan sent), hours to its bound."""
    out: dict[str, dict[str, Any]] = {}
    for key, bound in bounds.items():
        points = [(s.t, float(s.stores[key])) for s in samples if key in s.stores]
        if not points:
            continue
        rate_per_s = written_per_s(points) if key == "redis_aof_bytes" else slope_per_s(points)
        unique = 1 if key == "kafka_bytes" else 1 - spec.resend_ratio  # Kafka keeps every scan sent
        per_scan = rate_per_s / (spec.rate * unique)
        now = points[-1][1]
        room = bound - now if key != "redis_aof_bytes" else bound  # the AOF is rewritten, not kept
        out[key] = {
            "grown": now - points[0][1],
            "last": now,
            "per_hour": rate_per_s * 3600,
            "per_scan": per_scan,
            "bound": bound,
            "hours_to_bound": room / (rate_per_s * 3600) if rate_per_s > 0 else None,
        }
    return out


def judge(result: dict[str, Any], spec: SoakSpec) -> list[report.Target]:
    """The soak's targets: flat memory and descriptors, a flat tail, nothing lost, the stores' sizes."""
    targets = [
        report.check(f"{group} RSS growth after the warm-up", growth * 100, "<=", RSS_GROWTH_MAX * 100,
                     unit=" %", fmt="{:.1f}")
        for group, growth in result["rss_growth"].items() if growth is not None
    ]  # fmt: skip
    growing = sorted(g for g, yes in result["fds_growing"].items() if yes)
    targets.append(report.Target("open descriptors", "no group rising every quarter",
                                 ", ".join(growing) or "none rising", not growing))  # fmt: skip
    judged = (spec.duration_s - spec.warmup_s) / 4 >= TAIL_JUDGED_QUARTER_S
    for name in ("ingest p99", "freshness p99"):
        first, last = result[f"{name.split()[0]}_p99_ms"]
        ratio = last / first if first and judged else None
        targets.append(report.check(f"{name}, last quarter ÷ first ({first:.1f} → {last:.1f} ms)",
                                    ratio, "<=", TAIL_GROWTH_MAX, fmt="{:.2f}",
                                    note="" if judged else "quarters too short to judge"))  # fmt: skip
    v = result["verification"]
    for name, key in (("missing", "missing"), ("stored twice", "duplicate_rows")):
        targets.append(report.check(f"acknowledged scans {name}", v[key], "<=", 0, fmt="{:.0f}"))
    table = result["stores"].get("table_bytes", {})
    # InnoDB allocates whole extents (1 MiB, then 4 at a time): a table that grew less than this is
    # measured in allocation steps, not rows (a smoke's minute); its bytes per row are not judged.
    row = table.get("per_scan") if table.get("grown", 0) >= TABLE_GROWTH_JUDGED else None
    chars = result["device_id_chars"]
    targets.append(report.check(f"table bytes per row (data + indexes), {chars}-character device IDs", row,
                                "<=", ROW_BYTES_MAX, unit=" B", fmt="{:.0f}",
                                note="a deviceId character: ~3 B (column, key, internal ID)"))  # fmt: skip
    steady = redis_steady_bytes(result["stores"], result["dedup_window_s"])
    goal = REDIS_STEADY_MAX * spec.rate / 1000
    targets.append(report.check(f"Redis once the duplicate window is full, at {spec.rate:,.0f} scans/s",
                                None if steady is None else steady / capacity.GIB, "<=", goal / capacity.GIB,
                                unit=" GiB", fmt="{:.2f}"))  # fmt: skip
    return targets


def redis_steady_bytes(measured: dict[str, dict[str, Any]], window_s: int) -> float | None:
    """Redis memory once the markers cover the duplicate window: their measured growth for the window
    (plus the minute a marker hash outlives it), the streams and the DLQ as they ended."""
    markers = measured.get("redis_markers_bytes")
    if markers is None:
        return None
    others = sum(measured.get(k, {}).get("last", 0.0) for k in ("redis_streams_bytes", "redis_dlq_bytes"))
    return float(markers["per_hour"] / 3600 * (window_s + 60) + others)


def run_soak(spec: SoakSpec, run: BenchRun) -> dict[str, Any]:
    say = report.progress_logger(__name__)
    with run.started(spec, legacy=False) as (env, env_info):
        from barcode_harness.stack.manager import StackManager

        kafka_dir = StackManager(env.settings).component("kafka").data_dir  # type: ignore[attr-defined]
        bounds = _bounds(env.settings)
        specs = load_specs(spec, env.ingest_url, run.out, env.api_key)
        sampler = SoakSampler(env.settings, kafka_dir, env.pids, spec.sample_s)
        say(f"soak: {spec.rate:,.0f} scans/s for {spec.duration_s:,.0f} s, sampled every {spec.sample_s:g} s")
        with ParallelLoads(len(specs)) as pool, sampler:
            futures = [pool.submit(s) for s in specs]  # all started, then awaited
            loads = [f.result() for f in futures]
        say("soak: load done; draining and verifying")
        drained_s = env.drain(timeout=600)
        start = min(load.started_at for load in loads)
        window = scan_window(loads[0])
        ids = [i for load in loads for i in acked_ids(load)]
        verification = verify_scan_ids(env.settings.db.url, ids, window=window)
        freshness = freshness_windows(env.settings, window.devices, start, specs[0].window_s)
        latency = _latency_windows(loads, start)
    warm = [s for s in sampler.samples if s.t - start >= spec.warmup_s]
    groups = sorted({g for s in warm for g in s.groups})
    summaries = [{"scans_acked": x.scans_acked, "errors": x.errors, "rate": x.spec.rate, "mode": x.spec.mode,
                  "latency_ms": x.latency.to_dict()} for x in loads]  # fmt: skip
    result: dict[str, Any] = {
        "command": "soak",
        "environment": env_info,
        "started_at": start,
        "loads": summaries,
        "drained_s": drained_s,
        "verification": verification.to_dict(),
        "dedup_window_s": env.settings.dedup.window_s,
        "device_id_chars": round(sum(map(len, window.devices)) / len(window.devices)),
        "stores": stores(warm, spec, bounds),
        "rss_growth": {g: rss_growth(warm, g) for g in groups if g in PIPELINE_GROUPS},
        "fds_growing": {g: fds_keep_growing(warm, g) for g in groups},
        "ingest_p99_ms": tail_growth([w for w in latency if w[0] >= spec.warmup_s]),
        "freshness_p99_ms": tail_growth([w for w in freshness if w[0] >= spec.warmup_s]),
        "series": _series(sampler.samples, latency, freshness, start),
        "folder": str(run.out),
    }
    result["targets"] = [t.to_dict() for t in judge(result, spec)]
    return run.write(
        "soak", result, lambda r: markdown(r, spec), lambda out, r: chart(out / "soak.png", r, spec)
    )


def _series(samples: Sequence[Sample], latency: Sequence[tuple[int, LatencyHistogram]],
            freshness: Sequence[tuple[int, LatencyHistogram]], start: float) -> dict[str, Any]:  # fmt: skip
    def percentiles(windows: Sequence[tuple[int, LatencyHistogram]]) -> dict[str, list[float]]:
        return {
            "t": [float(t) for t, _ in windows],
            "p50_ms": [h.percentile_us(50.0) / 1000 for _, h in windows],
            "p99_ms": [h.percentile_us(99.0) / 1000 for _, h in windows],
        }

    return {
        "samples": [{**s.to_dict(), "t": round(s.t - start, 1)} for s in samples],
        "ingest": percentiles(latency),
        "freshness": percentiles(freshness),
    }


# --------------------------------------------------------------------------- rendering
STORE_LABELS = {
    "redis_used_bytes": "Redis memory, all of it",
    "redis_markers_bytes": "Redis: duplicate markers",
    "redis_streams_bytes": "Redis: streams (trimmed to their retention)",
    "redis_dlq_bytes": "Redis: DLQ",
    "redis_aof_bytes": "Redis AOF (written; rewrites shrink it)",
    "kafka_bytes": "Kafka topic, one replica (per scan sent)",
    "table_bytes": "`barcodes`, data + indexes",
    "dlq_entries": "DLQ entries",
}


def chart(path: Path, result: dict[str, Any], spec: SoakSpec) -> Path:
    series = result["series"]
    samples = series["samples"]
    xs = [s["t"] / 60 for s in samples]
    mib = 2**20
    groups = sorted({g for s in samples for g in s["groups"]})
    rss = [Line(g, xs, [s["groups"].get(g, {}).get("rss_bytes", 0) / mib for s in samples]) for g in groups]
    store_lines = [
        Line(STORE_LABELS[k].split(" (")[0], xs, [s["stores"].get(k, 0) / mib for s in samples])
        for k in ("redis_used_bytes", "redis_markers_bytes", "redis_aof_bytes", "kafka_bytes", "table_bytes")
    ]
    tails = [Line(f"{name} {q}", [t / 60 for t in series[name]["t"]], series[name][f"{q}_ms"])
             for name, q in (("ingest", "p50"), ("ingest", "p99"), ("freshness", "p99"))]  # fmt: skip
    cpu = [Line(g, xs, [s["cpu"].get(g, math.nan) for s in samples]) for g in groups if g != SUPERVISOR]
    warm = [(0.0, spec.warmup_s / 60, "warm-up")]
    return time_chart(path, f"bench soak: {spec.rate:,.0f} scans/s", [
        Panel("RSS (MiB)", rss, logy=True, shade=warm),
        Panel("store (MiB)", store_lines, logy=True, shade=warm),
        Panel(f"ms, per {spec.sample_s:g} s of scans", tails, logy=True, shade=warm),
        Panel("cores", cpu, shade=warm),
    ], xlabel="minutes")  # fmt: skip


def _hours(value: float | None) -> str:
    if value is None:
        return "never (flat)"
    return f"{value:,.0f} h" if value < 48 else f"{value / 24:,.0f} days"


def markdown(result: dict[str, Any], spec: SoakSpec) -> str:
    quick = " (**quick** preset: a smoke, not evidence)" if spec.preset == "quick" else ""
    v = result["verification"]
    rows = [
        (STORE_LABELS[k], f"{s['per_scan']:,.1f} B" if k != "dlq_entries" else f"{s['per_scan']:.4f}",
         f"{s['per_hour'] / 2**20:,.1f} MiB/h" if k != "dlq_entries" else f"{s['per_hour']:,.0f}/h",
         f"{s['last'] / 2**20:,.0f} MiB" if k != "dlq_entries" else f"{s['last']:,.0f}",
         f"{s['bound'] / 2**30:,.1f} GiB" if k != "dlq_entries" else f"{s['bound']:,.0f}",
         _hours(s["hours_to_bound"]))
        for k, s in result["stores"].items()
    ]  # fmt: skip
    procs = sorted({g for s in result["series"]["samples"] for g in s["groups"]})
    last = result["series"]["samples"][-1]["groups"] if result["series"]["samples"] else {}
    proc_rows = [
        (g, f"{last[g]['rss_bytes'] / 2**20:,.0f} MiB" if g in last else "-",
         "-" if result["rss_growth"].get(g) is None else f"{result['rss_growth'][g] * 100:+.1f} %",
         str(last[g]["fds"]) if g in last else "-", str(last[g]["threads"]) if g in last else "-")
        for g in procs
    ]  # fmt: skip
    body = "\n\n".join([
        f"## `bench soak`{quick}",
        f"{spec.rate:,.0f} scans/s for {spec.duration_s / 60:,.0f} min ({spec.batch_share:.0%} through the "
        f"batch API in batches of {BATCH_MIN}-{spec.batch_max}, {spec.resend_ratio:.0%} resends), sampled "
        f"every {spec.sample_s:g} s, slopes fitted after a {spec.warmup_s:,.0f}-second warm-up. "
        "Everything (clients, services, Kafka, Redis, MariaDB) shared this machine's cores. "
        f"Acknowledged {v['acknowledged']:,}, stored {v['stored']:,}, missing {v['missing']}, stored twice "
        f"{v['duplicate_rows']}; drained {result['drained_s']:.1f} s after the load stopped.",
        report.md_targets(result["targets"]),
        report.md_environment(result["environment"]).replace("## Environment", "### Environment"),
        report.md_table(["store", "per scan", "slope", "at the end", "bound here", "reaches it in"], rows),
        report.md_table(["process group", "RSS at the end", "RSS growth after warm-up", "fds", "threads"],
                        proc_rows),
        "![soak](img/soak.png)",
    ])  # fmt: skip
    return f"{SECTION[0]}\n{body}\n{SECTION[1]}\n"


def write_section(doc: Path, section: str) -> Path:
    """Replace (or append) the soak section of ``doc``."""
    return sections.write(doc, section, SECTION, "# Capacity")
