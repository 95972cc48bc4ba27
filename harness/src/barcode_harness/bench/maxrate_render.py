"""``bench max``'s charts (PNG) and Markdown report, apart from the run (:mod:`.maxrate`) so that a
report can be redrawn from its result JSON without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from barcode_harness.bench import charts, report

CPU_RATES = (1000, 5000)  # the rates the CPU-per-scan table reports
STAGES = ("ingest", "legacy", "processor", "workers", "kafka", "redis", "mariadb")  # CPU groups of a step


def write_charts(out: Path, result: dict[str, Any]) -> list[Path]:
    series = {
        name: [(s["scans_per_s"], s["load"]["latency_ms"]["p99_ms"], s["sustained"]) for s in r["steps"]]
        for name, r in result["paths"].items()
    }
    title = "Client p99 against offered load, per path and API"
    return [charts.rate_chart(out / "max-rates.png", title, series)]


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    spec = env["spec"]
    c = result["ceilings"]
    kl = c["kafka_produce_latency"]
    kt = c["kafka_produce_throughput"]
    ins = c["bare_insert"]
    klat = kl["latency_ms"]
    rows, step_rows, cpu_rows, evidence = [], [], [], []
    for name, r in result["paths"].items():
        best_step = next((s for s in r["steps"] if s["scans_per_s"] == r["max_sustained_scans_per_s"]), None)
        f = r["first_failure"]
        rows.append(
            [name, r["max_sustained_scans_per_s"],
             best_step["load"]["latency_ms"]["p99_ms"] if best_step else None, r["saturated_stage"],
             "; ".join(f["reasons"]) if f else "–", r["fraction_of_bare_insert"],
             r["fraction_of_kafka_produce"]]
        )  # fmt: skip
        if f:
            evidence.append(f"- **{name}** at {f['scans_per_s']:,.0f} scans/s: {f['saturated_stage']}. "
                            + " ".join(e + "." for e in f["evidence"]))  # fmt: skip
        for s in r["steps"]:
            lat = s["load"]["latency_ms"]
            top = sorted(s["cpu_cores"].items(), key=lambda kv: -kv[1])[:5]
            step_rows.append(
                [name, s["scans_per_s"], "yes" if s["sustained"] else "no", s["load"]["achieved_rps"],
                 s["load"]["errors"], lat["p50_ms"], lat["p99_ms"],
                 sum(s["backlog_end"].values()) if s["backlog_end"] else "–", s["drain_s"], s["lost"],
                 ", ".join(f"{k} {v:.2f}" for k, v in top)]
            )  # fmt: skip
        for wanted in CPU_RATES:
            near = min(r["steps"], key=lambda s: abs(s["scans_per_s"] - wanted), default=None)
            if near is not None and "cpu_us_per_scan" in near:
                per = near["cpu_us_per_scan"]
                cpu_rows.append([name, wanted, near["scans_per_s"], *(per.get(k) for k in STAGES),
                                 round(sum(per.values()), 1)])  # fmt: skip
    sections = [
        report.md_head(env),
        "## Raw ceilings (same servers, same run)\n\n"
        + report.md_table(
            ("ceiling", "figure"),
            [
                [f"bare Kafka produce round trip at {kl['rate']:g}/s (acks=all, idempotent; "
                 "p50 / p99 / max ms)",
                 f"{klat['p50_ms']} / {klat['p99_ms']} / {klat['max_ms']}"],
                [f"one producer, as fast as it can ({kt['payload_bytes']} B messages)",
                 f"{kt['messages_per_s']:,.0f} msg/s"],
                [f"bare multi-row INSERT, {ins['batch_rows']} rows + COMMIT per statement, "
                 f"{ins['connections']} connections, statements pre-built",
                 f"{ins['rows_per_s']:,.0f} rows/s"],
            ],
        ),
        "## Highest sustained rate\n\n"
        f"Sustained = error rate below {spec['max_error_rate']:.1%}, ≥ 99 % answered in time, client p99 ≤ "
        f"{spec['max_p99_ms']:g} ms, every acknowledged scan stored once; async also: backlog at the "
        "step's end ≤ "
        f"{spec['backlog_allow_s']:g} s of scans and drained within {spec['drain_limit_s']:g} s. Steps of "
        f"{spec['step_s']:g} s, rate × {spec['growth']:g} until a step fails, then {spec['refine_steps']} "
        f"bisection(s). Batch API: {spec['batch_size']} scans per request.\n\n"
        + report.md_table(
            ("path", "max sustained scans/s", "p99 ms there", "saturated first", "why the next step failed",
             "÷ bare INSERT", "÷ Kafka producer"),
            rows,
        ),
        "## Which stage saturated first: evidence\n\n" + ("\n".join(evidence) or "No step failed."),
        "## CPU per scan, by stage\n\n"
        "Microseconds of CPU each stage used per scan (cores busy ÷ scans/s) at the search step nearest "
        "each rate, so a change shows where it moved the cost. The client's own CPU is left out.\n\n"
        + report.md_table(
            ("path", "rate", "step scans/s", *(f"{k} µs" for k in STAGES), "total µs"), cpu_rows
        ),
        "## Every step\n\n" + report.md_table(
            ("path", "scans/s", "sustained", "answered req/s", "errors", "p50 ms", "p99 ms", "backlog at end",
             "drain s", "lost", "CPU cores (top 5)"),
            step_rows,
        ),
        "## Targets\n\n" + report.md_targets(result["targets"]),
        "## Charts\n\n![p99 against offered load](max-rates.png)",
    ]  # fmt: skip
    return report.md_document("Benchmark: maximum sustained rates (`bench max`)", sections)
