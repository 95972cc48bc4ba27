"""``bench isolation``'s charts (PNG) and Markdown report, apart from the run (:mod:`.isolation`) so that a
report can be redrawn from its result JSON without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from barcode_harness.bench import charts, report
from barcode_harness.bench.env import PATHS


def write_charts(out: Path, result: dict[str, Any]) -> list[Path]:
    c = result["contention"]
    shade = [(c["start_s"], c["end_s"], "DB contention")]
    lat = result["latency_series"]
    tails = [charts.Line(f"{p} {q}", lat[p]["t"], lat[p][f"{q}_ms"], style=style)
             for q, style in (("p99", "-"), ("p50", "--")) for p in PATHS]  # fmt: skip
    errors = [charts.Line(f"{p} errors", lat[p]["t"], lat[p]["errors"]) for p in PATHS]
    s = result["backlog"]["series"]
    stages = [("Kafka lag (processor)", "kafka_lag", "#9467bd"), ("stream undelivered", "undelivered",
              "#ff7f0e"), ("workers' pending", "pending", "#2ca02c")]  # fmt: skip
    backlog = [charts.Line("in flight (total)", s["t"], s["in_flight"], color="#000000")]
    backlog += [charts.Line(label, s["t"], s[key], color=color, style="--") for label, key, color in stages]
    latency = [charts.Panel("p99 per second (ms)", tails, logy=True, shade=shade),
               charts.Panel("failed requests per second", errors, shade=shade)]  # fmt: skip
    since = "seconds since the load started"
    return [
        charts.time_chart(out / "isolation-latency.png",
                          "Client latency while the database is locked (shaded), both paths at the same load",
                          latency, xlabel=f"{since} (by scheduled send time)"),
        charts.time_chart(out / "isolation-backlog.png",
                          "Async pipeline backlog per stage during and after the contention",
                          [charts.Panel("scans", backlog, shade=shade)], xlabel=since),
    ]  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    spec = env["spec"]
    c = result["contention"]
    b = result["backlog"]
    rows = []
    for window in result["windows"]:  # in the order the run measured them
        for path in PATHS:
            w = result["windows"][window][path]
            lat, inc = w["latency_ms"], w["latency_incl_timeouts_ms"]
            rows.append(
                [window, path, w["scheduled"], w["ok"], w["errors"], lat["p50_ms"], lat["p99_ms"],
                 lat["max_ms"], inc["p99_ms"], ", ".join(f"{k}: {v}" for k, v in w["status_counts"].items())]
            )  # fmt: skip
    sections = [
        report.md_head(env),
        "## What ran\n\n"
        f"Both paths at **{spec['rate']:g} single-scan requests/s each** (open loop, at most "
        f"{spec['concurrency']} in flight per path, client timeout {spec['timeout_s']:g} s), at the same "
        f"time: {spec['baseline_s']:g} s baseline, {spec['contention_s']:g} s of DB contention, "
        f"{spec['recovery_s']:g} s of recovery. Contention: {c['threads']} threads, each looping over one "
        "transaction that runs `SELECT id ... ORDER BY id DESC LIMIT "
        f"{c['rows_locked_per_table']} FOR UPDATE` on `legacy_barcodes` and `barcodes`, an `UPDATE` of "
        f"those rows, holds the locks {c['hold_s']:g} s and commits ({c['transactions']} transactions; "
        "under REPEATABLE READ this next-key-locks the end of both primary keys, so every INSERT into "
        "either table waits).",
        "## Latency per window\n\n" + report.md_table(
            ("window", "path", "requests", "2xx", "errors", "p50 ms", "p99 ms", "max ms",
             "p99 incl. timeouts ms", "outcomes"),
            rows,
        ) + "\n\nThe p99 incl. timeouts counts each request that got no answer at the client timeout, "
        "so a path that stops answering cannot look fast. Requests count in the window of their scheduled "
        "send time: the last legacy requests of the baseline window, still in flight when the locks were "
        "taken, wait too.",
        "## Async backlog (probes.backlog: Kafka lag + stream undelivered + workers' pending)\n\n"
        + report.md_table(
            ("baseline max in flight", "peak during contention", "back to baseline after contention",
             "drained after load end"),
            [[b["baseline_max_in_flight"], b["peak_in_flight_during_contention"],
              f"{b['back_to_baseline_s_after_contention']} s", f"{b['drained_s_after_load_end']} s"]],
        ),
        "## Loss check\n\n" + report.md_table(
            ("path", "acknowledged", "stored", "missing", "duplicate rows"),
            [[p, v["acknowledged"], v["stored"], v["missing"], v["duplicate_rows"]]
             for p, v in result["verification"].items()],
        ),
        "## Targets\n\n" + report.md_targets(result["targets"]),
        "## Charts\n\n![latency under contention](isolation-latency.png)\n\n"
        "![backlog](isolation-backlog.png)",
    ]  # fmt: skip
    return report.md_document("Benchmark: isolation from database contention (`bench isolation`)", sections)
