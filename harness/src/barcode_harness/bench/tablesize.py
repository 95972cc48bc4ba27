"""``bench table-size``: does a large ``barcodes`` slow the pipeline down?

The batch API's end-to-end maximum (``bench max`` async-batch) is searched twice on the same servers:
on the empty bench table, then after ``bench fill`` put ``rows`` rows in it over the last ``days`` days
(every daily partition holds its share). The goal: filled at least 80 % of empty. Verification goes
along the duplicate guard's (device, scan time) prefix, so it does not itself grow with the table.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

from barcode_harness import sections
from barcode_harness.bench import report
from barcode_harness.bench.docs import TABLE_SIZE
from barcode_harness.bench.env import BenchEnv, BenchRun
from barcode_harness.bench.fill import fill
from barcode_harness.bench.footprint import table_bytes
from barcode_harness.bench.maxrate import run_max
from barcode_harness.bench.specs import TableSizeSpec
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.adapters.db import connect

say = report.progress_logger(__name__)

PATH = "async-batch"
GOAL = 0.8  # filled maximum ÷ empty maximum


def _table(settings: HarnessSettings) -> dict[str, Any]:
    with closing(connect(settings.db.url, autocommit=True)) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM barcodes")
        rows = int(cur.fetchone()[0])
        data, indexes, _per_index = table_bytes(conn)
    return {"rows": rows, "data_bytes": data, "index_bytes": indexes}


def _search(settings: HarnessSettings, spec: TableSizeSpec, folder: Path, env: BenchEnv) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    result = run_max(spec.search, BenchRun(settings, folder, shared=env))
    return {
        "max_sustained_scans_per_s": result["paths"][PATH]["max_sustained_scans_per_s"],
        "saturated_stage": result["paths"][PATH]["saturated_stage"],
        "bare_insert_rows_per_s": result["ceilings"]["bare_insert"]["rows_per_s"],
        "table": _table(env.settings),
        "folder": folder.name,
    }


def run_table_size(spec: TableSizeSpec, run: BenchRun) -> dict[str, Any]:
    settings, out = run.settings, run.out
    with run.started(spec, legacy=False) as (env, env_info):
        say(f"{PATH} maximum on the empty table")
        empty = _search(settings, spec, out / "empty", env)
        say(f"filling barcodes with {spec.rows:,} rows over {spec.days:g} days")
        filled_with = fill(env.settings.db.url, spec.rows, days=spec.days)
        say(f"{PATH} maximum on the filled table")
        filled = _search(settings, spec, out / "filled", env)
    best = empty["max_sustained_scans_per_s"]
    ratio = filled["max_sustained_scans_per_s"] / best if best else 0.0
    target = report.check(f"{PATH} maximum, filled ÷ empty table", ratio, ">=", GOAL, fmt="{:.2f}")
    result = {
        "command": "table-size",
        "environment": env_info,
        "empty": empty,
        "fill": filled_with,
        "filled": filled,
        "ratio": round(ratio, 3),
        "targets": [target.to_dict()],
        "folder": str(out),
    }
    return run.write("table-size", result, markdown)


def write_section(doc: Path, section: str) -> Path:
    """Replace (or append) the table-size section of ``doc``; ``bench docs`` carries it over."""
    return sections.write(doc, section, TABLE_SIZE, "# Benchmarks")


def markdown(result: dict[str, Any]) -> str:
    """This run's section of docs/benchmarks.md, between its markers."""
    empty, filled, spec = result["empty"], result["filled"], result["environment"]["spec"]

    def row(label: str, r: dict[str, Any]) -> str:
        t = r["table"]
        size = (t["data_bytes"] + t["index_bytes"]) / 2**30
        return (
            f"| {label} | {t['rows']:,} | {size:.1f} GiB | **{r['max_sustained_scans_per_s']:,.0f}** "
            f"| {r['saturated_stage']} | {r['bare_insert_rows_per_s']:,.0f} |"
        )

    quick = " (**quick** preset: indicative only)" if spec["preset"] == "quick" else ""
    return "\n".join(
        [
            TABLE_SIZE[0],
            f"## `bench table-size`{quick}",
            "",
            report.md_environment(result["environment"]).replace("## Environment", "### Environment"),
            "",
            f"The batch API's end-to-end maximum (`bench max --path {PATH}`), searched on the empty table, "
            f"then again after `bench fill` put {spec['rows']:,} rows in it (scan times over the last "
            f"{spec['days']:g} days, {result['fill']['rows_per_s']:,.0f} rows/s). Same servers, same run.",
            "",
            "| table | rows | data + indexes | async-batch max (scans/s) | saturated first"
            " | bare INSERT (rows/s) |",
            "|---|---|---|---|---|---|",
            row("empty", empty),
            row("filled", filled),
            "",
            f"Filled ÷ empty: **{result['ratio']:.0%}** (goal ≥ {GOAL:.0%}). Each search's steps are in "
            f"`{empty['folder']}/max.md` and `{filled['folder']}/max.md` of the result folder.",
            "",
            "### Targets",
            "",
            report.md_targets(result["targets"]),
            "",
            f"_Source: `{result['folder']}`._",
            TABLE_SIZE[1],
        ]
    )
