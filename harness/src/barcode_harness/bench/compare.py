"""``bench compare``: the legacy path and the async pipeline under identical load, in one run.

"100 scans/s, 10 concurrent clients" (the original study) reads as an open-loop 100 single-scan
requests/s with at most 10 in flight per path, so a wait at the client counts. The paths take turns
(the database counters are server-wide), the order alternating per round, each path's figures merged
over the rounds; an async phase ends only once the pipeline drained, so its counters include the
trailing batch writes. Optionally: the same at a high rate, a bare Kafka produce at that rate (the
ingest target's reference), and a sweep of the workers' batching delay (writes vs freshness).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from barcode_harness.bench import report
from barcode_harness.bench.ceilings import commit_latency, drop_probe_topic, kafka_produce_latency
from barcode_harness.bench.compare_render import markdown, write_charts
from barcode_harness.bench.dbstats import HEADLINE, DbSampler, IoDelta, delta
from barcode_harness.bench.env import ASYNC, LEGACY, PATHS, BenchEnv, BenchRun
from barcode_harness.bench.loadgen import LoadResult
from barcode_harness.bench.loads import merged_latency, series, summary_dict
from barcode_harness.bench.specs import CompareSpec
from barcode_pipeline.ops.verify import Verification, percentile

log = logging.getLogger(__name__)
VERIFIED = ("acknowledged", "stored", "missing", "duplicate_rows")  # summed over a path's phases


def _freshness(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(values, 50), 1), "p99_ms": round(percentile(values, 99), 1)}


@dataclass
class Phase:
    name: str
    path: str
    load: LoadResult
    io: IoDelta
    verification: Verification
    drain_s: float
    start: float
    end: float
    max_delay_ms: int | None = None
    db_rates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "rate": self.load.spec.rate,
            "worker_max_delay_ms": self.max_delay_ms,
            "load": summary_dict(self.load),
            "io": self.io.to_dict(),
            "verification": self.verification.to_dict(),
            "freshness_ms": _freshness(self.verification.freshness_ms),
            "drain_s": round(self.drain_s, 2),
            "window": [self.start, self.end],
            "latency_series": series(self.load),
            "db_rates": self.db_rates,
        }


@dataclass
class Runner:
    """Runs phases against one :class:`BenchEnv`, sampling DB counters around each."""

    env: BenchEnv
    spec: CompareSpec
    run: BenchRun
    status: DbSampler

    def phases(
        self, name: str, paths: Iterable[str], max_delay_ms: int | None = None, warm: bool = True, **load: Any
    ) -> list[Phase]:
        """A warm-up on ``paths`` (if ``warm``), then a phase on each (``load``: ``spec_for``'s keywords),
        its ``name`` formatted with the path."""
        if warm:
            self.env.warm_up(paths, self.spec.warmup_s, self.spec.drain_timeout_s, **load)
        return [self.phase(name.format(path=path), path, max_delay_ms, **load) for path in paths]

    def phase(self, name: str, path: str, max_delay_ms: int | None, **spec: Any) -> Phase:
        log.info("%s: %s at %g scans/s for %gs", name, path, spec["rate"], spec["duration_s"])
        time.sleep(self.spec.settle_s)
        before = self.status.snapshot()
        load = self.env.load(path, acked=self.run.acked(name), **spec)
        drain_s = self.env.drain(self.spec.drain_timeout_s) if path == ASYNC else 0.0
        after = self.status.snapshot()
        check = self.env.verify(path, load)
        io = delta(before, after, scans=check.stored)
        log.info(
            "%s: %d ok, %d errors, p50 %.2f ms p99 %.2f ms mean %.2f ms; stored %d/%d; %s/1k scans: %s",
            name, load.ok, load.errors, load.latency.p50_ms, load.latency.p99_ms, load.latency.mean_ms,
            check.stored, check.acknowledged, "+".join(HEADLINE),
            "/".join(f"{io.per_1k(c) or 0:.1f}" for c in HEADLINE),
        )  # fmt: skip
        return Phase(name, path, load, io, check, drain_s, before.t, after.t, max_delay_ms)


def _combine(phases: list[Phase]) -> dict[str, Any]:
    io = sum((p.io for p in phases[1:]), phases[0].io)
    freshness = [f for p in phases for f in p.verification.freshness_ms]
    checks = [p.verification for p in phases]
    return {
        "phases": [p.name for p in phases],
        "latency_ms": merged_latency([p.load for p in phases]).to_dict(),
        "requests": sum(p.load.scheduled for p in phases),
        "ok": sum(p.load.ok for p in phases),
        "errors": sum(p.load.errors for p in phases),
        "io": io.to_dict(),
        **{k: sum(getattr(c, k) for c in checks) for k in VERIFIED},
        "freshness_ms": {**_freshness(freshness), "count": len(freshness)},
    }


def run_compare(spec: CompareSpec, run: BenchRun) -> dict[str, Any]:
    """Run everything, write ``compare.json``, ``compare.md`` and the charts into ``out``."""
    settings = run.settings
    high: list[Phase] = []
    sweep: list[Phase] = []
    with run.started(spec, drain_s=spec.drain_timeout_s) as (env, env_info):
        with DbSampler(settings.db.url) as status:
            probes: dict[str, Any] = {"database_server": status.server(), "kafka_produce": None,
                                      "counters_present": sorted(status.snapshot().values)}  # fmt: skip
            probes["commit_probe"] = commit_latency(settings, commits=spec.commit_probe)
            runner = Runner(env, spec, run, status)
            idle_before = status.snapshot()
            time.sleep(spec.idle_s)
            probes["idle_io"] = delta(idle_before, status.snapshot(), scans=0).to_dict()
            orders = [(LEGACY, ASYNC), (ASYNC, LEGACY)]
            phases = [
                p
                for r in range(spec.rounds)
                for p in runner.phases(f"r{r + 1}-{{path}}", orders[r % 2], rate=spec.rate,
                                       duration_s=spec.duration_s, concurrency=spec.concurrency, warm=r == 0)
            ]  # fmt: skip
            if spec.high_duration_s > 0:
                high = runner.phases(
                    "high-{path}", PATHS, rate=spec.high_rate, duration_s=spec.high_duration_s,
                    concurrency=spec.high_concurrency,
                )  # fmt: skip
                if spec.kafka_probe:
                    log.info("bare Kafka produce round trip at %g/s", spec.high_rate)
                    probe_s = spec.kafka_probe_s or max(3.0, spec.high_duration_s)
                    latency = kafka_produce_latency(settings, rate=spec.high_rate, duration_s=probe_s)
                    probes["kafka_produce"] = latency.to_dict()
                    drop_probe_topic(settings)
            if spec.sweep_duration_s > 0:
                for delay_ms in spec.sweep_delays_ms:
                    env.start_workers(settings.updated({"worker_max_delay_ms": delay_ms}))
                    sweep += runner.phases(
                        f"sweep-{delay_ms}ms", (ASYNC,), rate=spec.sweep_rate or spec.rate,
                        duration_s=spec.sweep_duration_s, concurrency=spec.concurrency, max_delay_ms=delay_ms,
                    )  # fmt: skip
                env.start_workers(settings)
        for p in [*phases, *high, *sweep]:
            p.db_rates = status.rates(p.start, p.end)
    return run.write("compare", summarise(env_info, probes, phases, high, sweep), markdown, write_charts)


# --------------------------------------------------------------------------- figures
def _per_1k_ratios(by_path: dict[str, Any], where: str, goal: float) -> list[report.Target]:
    """Legacy ÷ async of each headline counter per 1,000 scans."""
    per_1k = {c: [by_path[p]["io"]["per_1k_scans"].get(c) for p in (LEGACY, ASYNC)] for c in HEADLINE}
    return [
        report.check(f"{c} per 1,000 scans, legacy ÷ async, {where}", report.ratio(lv, av), ">=", goal,
                     unit="×", fmt="{:.1f}", note=f"legacy {lv}, async {av} per 1,000 scans")
        for c, (lv, av) in per_1k.items()
    ]  # fmt: skip


def summarise(env_info: dict[str, Any], probes: dict[str, Any], phases: list[Phase], high: list[Phase],
              sweep: list[Phase]) -> dict[str, Any]:  # fmt: skip
    """The report: ``probes`` (the server, its counters, idle I/O, commit and Kafka probes) and the phases."""
    result: dict[str, Any] = {
        "command": "compare",
        "environment": env_info,
        **probes,
        "paths": {path: _combine([p for p in phases if p.path == path]) for path in PATHS},
        "high": {p.path: _combine([p]) for p in high},
        "phases": [p.to_dict() for p in phases],
        "high_phases": [p.to_dict() for p in high],
        "sweep": [
            {
                "worker_max_delay_ms": p.max_delay_ms,
                "scans": p.verification.stored,
                "per_1k_scans": p.io.to_dict()["per_1k_scans"],
                "freshness_ms": _freshness(p.verification.freshness_ms),
                "lost": p.verification.missing,
                "duplicate_rows": p.verification.duplicate_rows,
                "drain_s": round(p.drain_s, 2),
            }
            for p in sweep
        ],
        "sweep_phases": [p.to_dict() for p in sweep],
    }
    result["targets"] = [t.to_dict() for t in targets(result)]
    return result


def targets(result: dict[str, Any]) -> list[report.Target]:
    paths, high = result["paths"], result["high"]
    legacy_mean, async_mean = (paths[p]["latency_ms"]["mean_ms"] for p in PATHS)
    out = [
        report.check(
            "avg latency legacy ÷ async at the compare load", report.ratio(legacy_mean, async_mean), ">=", 5,
            unit="×", fmt="{:.1f}", note=f"legacy {legacy_mean:.2f} ms, async {async_mean:.2f} ms (mean)",
        ),
        *_per_1k_ratios(paths, "compare load", 20),
    ]  # fmt: skip
    if LEGACY in high and ASYNC in high:
        ingest_p99 = float(high[ASYNC]["latency_ms"]["p99_ms"])
        rate = result["environment"]["spec"]["high_rate"]
        out += _per_1k_ratios(high, "at the high rate", 100)
        out.append(report.check(f"single-scan ingest p99 at {rate:g} req/s (acks=all)", ingest_p99, "<=", 3,
                                unit=" ms"))  # fmt: skip
        if kafka := result.get("kafka_produce"):
            kp99 = float(kafka["latency_ms"]["p99_ms"])
            out.append(report.check("ingest p99 − bare Kafka produce p99 at the same rate", ingest_p99 - kp99,
                                    "<=", 1, unit=" ms", note=f"bare produce p99 {kp99:.2f} ms"))  # fmt: skip
        fresh = float(high[ASYNC]["freshness_ms"]["p99_ms"])
        out.append(report.check(f"freshness p99 at {rate:g} scans/s", fresh, "<=", 200, unit=" ms"))
    lost = sum(paths[p]["missing"] + paths[p]["duplicate_rows"] for p in PATHS)
    lost += sum(h["missing"] + h["duplicate_rows"] for h in high.values())
    lost += sum(s["lost"] + s["duplicate_rows"] for s in result["sweep"])
    out.append(report.check("acknowledged = stored (lost + duplicated scans, every phase)", float(lost),
                            "<=", 0, fmt="{:.0f}"))  # fmt: skip
    return out
