"""``bench compare``'s charts (PNG) and Markdown report, apart from the run (:mod:`.compare`) so that a
report can be redrawn from its result JSON without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from barcode_harness.bench import charts, report
from barcode_harness.bench.dbstats import HEADLINE
from barcode_harness.bench.env import ASYNC, PATHS


def write_charts(out: Path, result: dict[str, Any]) -> list[Path]:
    all_phases = result["phases"] + result["high_phases"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in all_phases:
        groups.setdefault(p["name"].split("-")[0], []).append(p)
    panels = []
    for group, members in groups.items():
        lines = []
        for p in members:
            s = p["latency_series"]
            lines.append(charts.Line(f"{p['path']} p99", s["t"], s["p99_ms"]))
            lines.append(charts.Line(f"{p['path']} p50", s["t"], s["p50_ms"], style="--"))
        label = "1,000/s" if group == "high" else f"round {group[1:]}"
        panels.append(charts.Panel(f"{label}: ms ({members[0]['rate']:g} scans/s)", lines, logy=True))
    db_panels = [
        charts.Panel(f"{counter}/s (log scale)", [
            charts.Line(f"{p['path']} {p['name']}", p["db_rates"].get("t", []),
                        p["db_rates"].get(counter, []), style="-" if p["name"].startswith("r") else ":")
            for p in all_phases
        ], logy=True)
        for counter in HEADLINE
    ]  # fmt: skip
    since = "seconds since the phase started"
    titled = [
        ("compare-latency.png", "Client latency per second (from the scheduled send time), legacy vs async",
         panels),
        ("compare-db-writes.png", f"Database writes per second ({result['database_server']}), each phase "
         "incl. the async drain", db_panels),
    ]  # fmt: skip
    made = [charts.time_chart(out / name, title, p, xlabel=since) for name, title, p in titled if p]
    if sweep := result["sweep"]:
        made.append(
            charts.tradeoff_chart(
                out / "compare-batching.png",
                "Batching delay trade-off: DB writes per 1,000 scans vs freshness (async path)",
                [s["worker_max_delay_ms"] for s in sweep],
                {c: [s["per_1k_scans"].get(c) for s in sweep] for c in HEADLINE},
                {f"freshness {q}": [s["freshness_ms"][f"{q}_ms"] for s in sweep] for q in ("p50", "p99")},
            )
        )
    return made


# --------------------------------------------------------------------------- markdown
_LAT_HEAD = ("path", "requests", "2xx", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
             "mean ms")  # fmt: skip
_LAT_KEYS = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")


def _latency_row(name: str, c: dict[str, Any]) -> list[Any]:
    return [name, c["requests"], c["ok"], c["errors"], *(c["latency_ms"][k] for k in _LAT_KEYS)]


def _io_rows(named: list[tuple[str, dict[str, Any]]], counters: list[str]) -> list[list[Any]]:
    kinds = ("deltas", "per_second", "per_1k_scans")
    return [
        [name, c["io"]["scans"], c["io"]["seconds"], *(c["io"][k].get(n) for n in counters for k in kinds)]
        for name, c in named
    ]


def _commit_sentence(probe: dict[str, Any] | None) -> str:
    if not probe:
        return ""
    lat = probe["latency_ms"]
    return (
        f"One single-row INSERT + COMMIT on this server (what the legacy path pays per scan; "
        f"innodb_flush_log_at_trx_commit={probe['innodb_flush_log_at_trx_commit']}), "
        f"{probe['commits']} in a row: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms. "
    )


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    spec = env["spec"]
    paths = result["paths"]
    wanted = ("Innodb_log_writes", "Innodb_data_fsyncs", "Innodb_os_log_fsyncs", "Innodb_data_writes")
    counters = [c for c in wanted if c in result["counters_present"]]
    missing = [c for c in ("Innodb_os_log_fsyncs",) if c not in result["counters_present"]]
    idle = result["idle_io"]["per_second"]
    per_counter = (h for c in counters for h in (c, f"{c}/s", f"{c} per 1k scans"))
    io_head = ["path", "scans stored", "seconds", *per_counter]
    sections = [
        report.md_head(env),
        "## Load\n\n"
        f"Open-loop arrival rate **{spec['rate']:g} single-scan requests/s** per path with at most "
        f"**{spec['concurrency']} requests in flight** (the original study's 10 concurrent clients): "
        "a request that finds all 10 busy waits at the client, and that wait counts in its latency, "
        f"which is measured from its scheduled send time. {spec['duration_s']:g} s per phase; "
        f"{spec['rounds']} rounds "
        "(round 1 legacy then async, round 2 async then legacy); each path's percentiles come from its "
        "rounds' HDR histograms merged, its I/O from their counters summed. The paths never run at the "
        "same time, so the server-wide database counters belong to one path at a time.",
        "## Client latency at the compare load\n\n"
        + report.md_table(_LAT_HEAD, [_latency_row(p, paths[p]) for p in PATHS])
        + "\n\nPer phase:\n\n"
        + report.md_table(
            ("phase", "requests", "2xx", "errors", "p50 ms", "p99 ms", "max ms", "mean ms"),
            [
                [p["name"], p["load"]["scheduled"], p["load"]["ok"], p["load"]["errors"],
                 *(p["load"]["latency_ms"][k] for k in ("p50_ms", "p99_ms", "max_ms", "mean_ms"))]
                for p in result["phases"]
            ],
        ),
        f"## Database write I/O ({result['database_server']})\n\n"
        "Sampled with `SHOW GLOBAL STATUS` before and after each phase; an async phase's after-sample "
        "is taken once the pipeline has drained, so its trailing batch writes are included. "
        + (f"Not present on this server: {', '.join(missing)}. " if missing else "")
        + _commit_sentence(result.get("commit_probe"))
        + f"With no load, the server did {idle.get('Innodb_log_writes', 0)} "
        f"log writes/s and {idle.get('Innodb_data_fsyncs', 0)} data fsyncs/s in the "
        "background (included in every phase's figures).\n\n"
        + report.md_table(io_head, _io_rows([(p, paths[p]) for p in PATHS], counters)),
    ]  # fmt: skip
    high = result["high"]
    if high:
        rate, named = spec["high_rate"], [(p, high[p]) for p in PATHS if p in high]
        block = (
            f"## At {rate:g} scans/s\n\n{spec['high_duration_s']:g} s per path, "
            f"up to {spec['high_concurrency']} requests in flight.\n\n"
            + report.md_table(_LAT_HEAD, [_latency_row(p, c) for p, c in named])
            + "\n\n"
            + report.md_table(io_head, _io_rows(named, counters))
        )
        if ASYNC in high:
            f = high[ASYNC]["freshness_ms"]
            block += (
                f"\n\nAsync freshness (scanTime → saved_time) at {rate:g} scans/s: "
                f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms."
            )
        if kafka := result.get("kafka_produce"):
            k = kafka["latency_ms"]
            block += (
                f"\n\nBare Kafka produce round trip (one `acks=all` idempotent produce → delivery report, "
                f"ingest's producer settings) at {kafka['rate']:g}/s for {kafka['duration_s']:g} s: p50 "
                f"{k['p50_ms']} ms, p99 {k['p99_ms']} ms, p99.9 {k['p999_ms']} ms, max {k['max_ms']} ms."
            )
        sections.append(block)
    fresh = paths[ASYNC]["freshness_ms"]
    sections.append(
        "## Freshness and loss\n\n"
        f"Async end-to-end freshness (scanTime → saved_time) at the compare load: p50 {fresh['p50_ms']} ms, "
        f"p99 {fresh['p99_ms']} ms over {fresh['count']} scans (workers' default batching delay).\n\n"
        + report.md_table(
            ("phase", "acknowledged", "stored", "missing", "duplicate rows", "drain s"),
            [
                [p["name"], p["verification"]["acknowledged"], p["verification"]["stored"],
                 p["verification"]["missing"], p["verification"]["duplicate_rows"], p["drain_s"]]
                for p in result["phases"] + result["high_phases"] + result["sweep_phases"]
            ],
        )
    )  # fmt: skip
    if result["sweep"]:
        rate = spec["sweep_rate"] or spec["rate"]
        sections.append(
            f"## Batching delay trade-off (async, {rate:g} scans/s, {spec['sweep_duration_s']:g} s each)\n\n"
            + report.md_table(
                ("worker_max_delay_ms", "scans", *(f"{c} per 1k" for c in HEADLINE), "freshness p50 ms",
                 "freshness p99 ms", "lost"),
                [
                    [s["worker_max_delay_ms"], s["scans"], *(s["per_1k_scans"].get(c) for c in HEADLINE),
                     s["freshness_ms"]["p50_ms"], s["freshness_ms"]["p99_ms"], s["lost"]]
                    for s in result["sweep"]
                ],
            )
            + "\n\n![batching trade-off](compare-batching.png)"
        )  # fmt: skip
    sections.append("## Targets\n\n" + report.md_targets(result["targets"]))
    sections.append(
        "## Charts\n\n![latency over time](compare-latency.png)\n\n"
        "![database writes per second](compare-db-writes.png)"
    )
    return report.md_document("Benchmark: legacy vs async (`bench compare`)", sections)
