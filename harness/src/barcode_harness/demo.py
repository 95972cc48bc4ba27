"""``barcode-pipeline demo``, the main job: stack + pipeline + a short, realistic load, then a summary."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from barcode_harness.bench.loadgen import LoadResult, LoadSpec, run_load
from barcode_harness.bench.warmup import warm_until_steady
from barcode_harness.keys import with_harness_key
from barcode_harness.settings import HarnessSettings, load_harness_settings
from barcode_harness.stack.secure import stack_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging
from barcode_pipeline.ops.verify import percentile, verify_scan_ids
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSpec:
    rate: float = 300.0
    duration_s: float = 10.0
    duplicate_ratio: float = 0.1
    # Warm-up rounds before the measured window, reported apart, so a newcomer's first figure is the
    # steady one (connections open, the broker's JIT compiled: it follows invocation counts, hence the
    # higher rate). A freshly started broker needs about a minute; a warm stack stops at the minimum.
    warmup_rate: float = 1000.0
    warmup_round_s: float = 3.0
    warmup_min_rounds: int = 3
    warmup_max_rounds: int = 20


def run_demo(settings: HarnessSettings, spec: DemoSpec) -> dict[str, Any]:
    """Run the demo and return its summary (also written to the log)."""
    work = Path(tempfile.mkdtemp(prefix="bp-demo-"))
    acked = work / "acked-scan-ids.txt"
    pipeline_log = settings.state_dir / "logs" / "demo-pipeline.log"
    settings = with_harness_key(settings, "demo")
    url = f"http://{settings.ingest.host}:{settings.ingest.port}"
    warm_acked = 0

    def load(rate: float, duration_s: float, acked: Path, duplicate_ratio: float = 0.0) -> LoadResult:
        return run_load(LoadSpec(url=url, rate=rate, duration_s=duration_s, duplicate_ratio=duplicate_ratio,
                                 acked_ids_path=acked, api_key=settings.ingest_api_key))  # fmt: skip

    def warm_round(index: int) -> float:
        nonlocal warm_acked
        result = load(spec.warmup_rate, spec.warmup_round_s, work / f"warmup-{index}-acked-scan-ids.txt")
        warm_acked += result.scans_acked
        log.info("warm-up round %d: p99 %.2f ms", index + 1, result.latency.p99_ms)
        return result.latency.p99_ms

    with running_pipeline(settings, log_path=pipeline_log):
        warm_started = time.monotonic()
        warm_p99s = warm_until_steady(warm_round, spec.warmup_min_rounds, spec.warmup_max_rounds)
        warm_s = time.monotonic() - warm_started
        result = load(spec.rate, spec.duration_s, acked, spec.duplicate_ratio)
        drain_s, _backlog = wait_drained(settings, timeout=120)
    ids = acked.read_text().split() if acked.exists() else []
    warm_ids = [i for path in work.glob("warmup-*-acked-scan-ids.txt") for i in path.read_text().split()]
    check = verify_scan_ids(settings.db.url, ids)
    warm_check = verify_scan_ids(settings.db.url, warm_ids)
    return {
        "rate_per_s": spec.rate,
        "duration_s": spec.duration_s,
        "requests_sent": result.sent,
        "accepted_2xx": result.ok,
        "errors": result.errors,
        "scans_accepted": result.scans_acked,
        "unique_scans_accepted": check.acknowledged,
        "stored": check.stored,
        "duplicates_blocked": result.scans_acked - check.stored,
        "duplicate_rows": check.duplicate_rows + warm_check.duplicate_rows,
        "lost": check.missing + warm_check.missing,
        "ingest_p50_ms": round(result.latency.p50_ms, 2),
        "ingest_p99_ms": round(result.latency.p99_ms, 2),
        "freshness_p50_ms": round(percentile(check.freshness_ms, 50), 1),
        "freshness_p99_ms": round(percentile(check.freshness_ms, 99), 1),
        "drained_after_load_s": round(drain_s, 2),
        "warmup_not_measured": f"{len(warm_p99s)} rounds at {spec.warmup_rate:.0f}/s, {warm_s:.0f}s",
        "warmup_scans_accepted_and_stored": f"{warm_acked} / {warm_check.stored}",
        "warmup_ingest_p99_ms_first_last": f"{warm_p99s[0]:.2f} / {warm_p99s[-1]:.2f}",
        "pipeline_log": str(pipeline_log),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def demo(
    rate: Annotated[float, typer.Option(help="Scans per second.")] = 300.0,
    duration: Annotated[float, typer.Option(help="Seconds of load.")] = 10.0,
    duplicates: Annotated[float, typer.Option(help="Share of scans resent by the client (0-1).")] = 0.1,
) -> None:
    """Stack + pipeline + a short scanner load, then a summary. Exit 1 if a scan was lost or doubled."""
    from rich.console import Console
    from rich.table import Column, Table

    if rate <= 0 or duration <= 0 or not 0 <= duplicates < 1:
        raise ConfigError("--rate and --duration must be > 0 and --duplicates within [0, 1)")
    settings = stack_settings(load_harness_settings())  # a secured state dir: its TLS and per-role users
    setup_logging("WARNING", "demo")
    console = Console()
    with console.status(f"demo: pipeline up, sending {rate:.0f} scans/s for {duration:.0f}s ..."):
        summary = run_demo(settings, DemoSpec(rate=rate, duration_s=duration, duplicate_ratio=duplicates))
    title = "barcode-pipeline demo (all services share this machine's cores)"
    table = Table("measure", Column("value", justify="right"), title=title)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    ok = summary["lost"] == 0 and summary["duplicate_rows"] == 0
    console.print(
        "[green]every accepted scan stored exactly once[/]" if ok else "[red]LOSS OR DUPLICATES DETECTED[/]"
    )
    console.print("the stack keeps running; stop it with: .venv/bin/barcode-pipeline stack down")
    raise typer.Exit(0 if ok else 1)


def register(app: typer.Typer) -> None:
    app.command()(demo)
