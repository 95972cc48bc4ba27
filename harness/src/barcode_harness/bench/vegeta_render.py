"""Rendering of ``bench vegeta`` results: the Markdown report (the figures are vegeta's own)."""

from __future__ import annotations

from typing import Any

from barcode_harness.bench import report


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    spec = env["spec"]
    head = ("run", "req/s sent", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "success", "codes",
            "acknowledged", "stored", "lost", "duplicate rows", "drained after s")  # fmt: skip
    rows = [
        [r["label"], r["rate"], r["mean_ms"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
         f"{r['success']:.4f}", ", ".join(f"{k}: {v}" for k, v in r["status_codes"].items()),
         r["acknowledged"], r["stored"], r["lost"], r["duplicate_rows"], r["drained_after_s"]]
        for r in result["runs"]
    ]  # fmt: skip
    intro = (
        f"Single-scan `POST /ingest/barcode` driven by **vegeta** ({env['vegeta'] or 'version unknown'}), an "
        f"independent open-loop load tool, at each rate for {spec['duration_s']:g} s while the processor and "
        "workers persist everything; latencies are vegeta's own `report`. The warm-up run "
        f"({spec['warmup_s']:g} s at the lowest rate) opens connections and warms the broker; it is shown "
        "apart and not part of the comparison. Then every scan vegeta saw answered 202 is looked up in the "
        "database."
    )
    return report.md_document(
        "bench vegeta: ingest latency by an independent client"
        + (" (quick)" if spec["preset"] == "quick" else ""),
        [intro, report.md_table(head, rows), report.md_environment(env)],
    )
