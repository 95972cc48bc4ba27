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
        "workers persist everything; latencies are vegeta's own `report`. The warm-up "
        f"(rounds of {spec.get('warmup_round_s', spec['warmup_s']):g} s at the highest rate until the p99 "
        f"stops falling, at most {spec['warmup_s']:g} s) opens connections and lets the broker's JIT "
        "compiler finish its request path (a fresh broker keeps compiling for about a minute of load, with "
        "a compile thread taking a core meanwhile); it is shown apart and not part of the comparison. "
        "Then every scan vegeta saw answered 202 is looked up in the database."
    )
    sections = [intro, report.md_table(head, rows)]
    if result.get("floors"):
        sections.append(floors_section(result, spec))
    if result.get("targets"):
        goals = [report.Target(**t) for t in result["targets"]]
        sections.append("### Targets\n\n" + report.md_targets(goals))
    sections.append(report.md_environment(env))
    return report.md_document(
        "bench vegeta: ingest latency by an independent client"
        + (" (quick)" if spec["preset"] == "quick" else ""),
        sections,
    )


def floors_section(result: dict[str, Any], spec: dict[str, Any]) -> str:
    """Ingest against what the machine costs anyway at the same rate, from the same run."""
    runs = {r["target_rate"]: r for r in result["runs"] if r["label"] != "warm-up"}
    head = ("req/s", "ingest p50 / p99 ms", "trivial endpoint p50 / p99 ms", "bare produce p50 / p99 ms",
            "ingest p50 − both floors ms")  # fmt: skip
    rows = []
    for floor in result["floors"]:
        run, http, produce = runs.get(floor["rate"]), floor["http"], floor.get("produce")
        ingest = f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f}" if run else "–"
        bare = f"{produce['p50_ms']:.2f} / {produce['p99_ms']:.2f}" if produce else "–"
        left = run["p50_ms"] - http["p50_ms"] - produce["p50_ms"] if run and produce else None
        trivial = f"{http['p50_ms']:.2f} / {http['p99_ms']:.2f}"
        rows.append([f"{floor['rate']:g}", ingest, trivial, bare, left])
    return (
        "### Floors at the same rates\n\n"
        f"Measured right after the runs above, {spec.get('floor_s', 0):g} s per rate, while the same "
        "services ran: vegeta sending the same kind of request to a trivial endpoint that answers at once "
        "(a raw asyncio protocol with the C httptools parser, as many processes as ingest), which is "
        "what the client, the kernel and one HTTP round trip cost on this machine; and a bare Kafka "
        "produce round trip (acks=all, idempotent) at the same rate, from one Python producer. What is "
        "left of the ingest p50 after both is the service's own cost.\n\n" + report.md_table(head, rows)
    )
