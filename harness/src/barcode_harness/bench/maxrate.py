"""``bench max``: the highest sustained rate per path and API, what saturated first, and the raw ceilings.

A step is *sustained* when, at that offered rate (open loop, ``step_s`` seconds):
* the client's error rate is below ``max_error_rate`` (0.1 %), at least 99 % of the requests were
  answered within the step's time and the client p99 stays under ``max_p99_ms``;
* every acknowledged scan is stored exactly once (ops.verify);
* async path only: the pipeline keeps up end to end. Its backlog at the end of the step is at most
  ``backlog_allow_s`` seconds' worth of scans and it drains within ``drain_limit_s`` after the load,
  so a rate that the ingest API accepts but the workers cannot store does not count.

The search grows the rate geometrically until a step fails, then bisects a few times. For the
first failing step, the report names the stage that saturated first from the evidence: which
backlog grew (Kafka lag: processor; stream undelivered or pending: workers/DB; none, but HTTP
errors or latency: ingest/Kafka) and which processes burned the CPU. Everything shares 2 cores, so
"the machine's CPU" is often the real answer and is stated when it is.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from barcode_harness.bench import procstats, report
from barcode_harness.bench.ceilings import (
    bare_insert,
    drop_probe_topic,
    kafka_produce_latency,
    kafka_produce_throughput,
)
from barcode_harness.bench.env import ASYNC, LEGACY, TABLES, BacklogSampler, BenchEnv, BenchRun, stage_counts
from barcode_harness.bench.loadgen import LoadResult
from barcode_harness.bench.loads import acked_ids, run_load, scan_window, spec_for, summary_dict
from barcode_harness.bench.maxrate_render import STAGES, markdown, write_charts
from barcode_harness.bench.specs import MaxSpec
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.probes.backlog import measure

log = logging.getLogger(__name__)

PATH_CHOICES = ("legacy-single", "legacy-batch", "async-single", "async-batch")


def cpu_per_scan(cpu_cores: dict[str, float], scans_per_s: float) -> dict[str, float]:
    """CPU microseconds each stage spent per scan: cores busy ÷ scans per second."""
    if scans_per_s <= 0:
        return {}
    return {k: round(v / scans_per_s * 1e6, 1) for k, v in cpu_cores.items() if k in STAGES}


@dataclass
class Step:
    path: str
    scans_per_s: float
    load: LoadResult
    sustained: bool
    reasons: list[str]
    cpu_cores: dict[str, float]
    backlog_start: dict[str, int]
    backlog_end: dict[str, int]
    growth_per_s: dict[str, float]
    drain_s: float | None
    acknowledged: int
    stored: int
    lost: int
    duplicates: int
    stage: str = ""
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "scans_per_s": self.scans_per_s,
            "sustained": self.sustained,
            "reasons": self.reasons,
            "load": summary_dict(self.load),
            "cpu_cores": self.cpu_cores,
            "cpu_us_per_scan": cpu_per_scan(self.cpu_cores, self.scans_per_s),
            "backlog_start": self.backlog_start,
            "backlog_end": self.backlog_end,
            "backlog_growth_per_s": self.growth_per_s,
            "drain_s": self.drain_s,
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "saturated_stage": self.stage,
            "evidence": self.evidence,
        }


class Searcher:
    def __init__(self, env: BenchEnv, spec: MaxSpec, out: Path, backlog: BacklogSampler) -> None:
        self.env = env
        self.spec = spec
        self.out = out
        self.backlog = backlog
        self.cores = float(os.cpu_count() or 1)

    def attempt(self, path: str, scans_per_s: float) -> Step:
        server, mode = path.split("-")
        per_request = self.spec.batch_size if mode == "batch" else 1
        load_spec = spec_for(
            self.env.url(server), api_key=self.env.api_key, rate=scans_per_s / per_request,
            duration_s=self.spec.step_s,
            concurrency=self.spec.concurrency, mode="batch" if mode == "batch" else "single",
            batch_size=self.spec.batch_size, acked=self.out / "acked" / f"{path}-{scans_per_s:.0f}.txt",
        )  # fmt: skip
        start_backlog = stage_counts(measure(self.env.settings)) if server == ASYNC else {}
        cpu0 = procstats.snapshot(self.env.pids(), rest="bench client")
        t0 = time.time()
        load = run_load(load_spec)
        t1 = time.time()
        cpu = procstats.cores_used(cpu0, procstats.snapshot(self.env.pids(), rest="bench client"))
        reasons: list[str] = []
        growth: dict[str, float] = {}
        end_backlog: dict[str, int] = {}
        drain_s: float | None = None
        if server == ASYNC:
            end_backlog = stage_counts(measure(self.env.settings))
            window = self.backlog.window(t0, t1)
            if len(window) >= 2:
                (ta, a), (tb, b) = window[0], window[-1]
                growth = {
                    k: round((v - stage_counts(a)[k]) / (tb - ta), 1) for k, v in stage_counts(b).items()
                } if tb > ta else {}  # fmt: skip
            in_flight = sum(end_backlog.values())
            allowed = scans_per_s * self.spec.backlog_allow_s
            if in_flight > allowed:
                reasons.append(
                    f"backlog {in_flight} > {allowed:.0f} ({self.spec.backlog_allow_s:g} s of scans)"
                )
            try:
                drain_s = round(self.env.drain(self.spec.drain_limit_s), 2)
            except PipelineError:
                reasons.append(f"not drained within {self.spec.drain_limit_s:g} s")
                t = time.monotonic()
                try:
                    self.env.drain(self.spec.cleanup_drain_s)
                except PipelineError:
                    log.warning("pipeline still not drained after %.0f s", self.spec.cleanup_drain_s)
                drain_s = round(self.spec.drain_limit_s + time.monotonic() - t, 2)
        if load.error_rate >= self.spec.max_error_rate:
            reasons.append(f"error rate {load.error_rate:.2%} ({load.status_counts})")
        trail = load.elapsed_s - load.spec.duration_s
        if trail > max(1.0, 2 * self.spec.max_p99_ms / 1000):
            reasons.append(
                f"answers trailed the schedule by {trail:.1f} s (answered {load.achieved_rps:,.0f}/s)"
            )
        if load.latency.p99_ms > self.spec.max_p99_ms:
            reasons.append(f"p99 {load.latency.p99_ms:,.1f} ms > {self.spec.max_p99_ms:g} ms")
        check = verify_scan_ids(
            self.env.settings.db.url, acked_ids(load), table=TABLES[server], window=scan_window(load)
        )
        lost = check.missing
        if lost or check.duplicate_rows:
            reasons.append(f"{lost} acknowledged scans missing, {check.duplicate_rows} duplicate rows")
        step = Step(
            path, scans_per_s, load, not reasons, reasons, cpu, start_backlog, end_backlog, growth, drain_s,
            check.acknowledged, check.stored, lost, check.duplicate_rows,
        )  # fmt: skip
        step.stage, step.evidence = diagnose(step, server, self.cores)
        log.info(
            "%s %.0f scans/s: %s (p99 %.1f ms, errors %d, cpu %s)%s",
            path, scans_per_s, "sustained" if step.sustained else "NOT sustained", load.latency.p99_ms,
            load.errors, cpu, "" if step.sustained else f" - {'; '.join(reasons)}",
        )  # fmt: skip
        return step

    def search(self, path: str) -> tuple[float, list[Step]]:
        start = self.spec.start_batch if path.endswith("batch") else self.spec.start_single
        steps: list[Step] = []
        good, bad = 0.0, math.inf
        rate = start
        while rate <= self.spec.max_rate and len(steps) < self.spec.max_steps:
            step = self.attempt(path, rate)
            steps.append(step)
            if step.sustained:
                good = rate
                rate = round(rate * self.spec.growth, -1)
            else:
                bad = rate
                break
        if math.isfinite(bad):
            for _ in range(self.spec.refine_steps):
                mid = round((good + bad) / 2, -1) if good else round(bad / 2, -1)
                if mid in (good, bad) or mid <= 0 or len(steps) >= self.spec.max_steps:
                    break
                step = self.attempt(path, mid)
                steps.append(step)
                if step.sustained:
                    good = mid
                else:
                    bad = mid
        return good, steps


def diagnose(step: Step, server: str, cores: float) -> tuple[str, list[str]]:
    """The stage that saturated first, with the evidence (empty stage when the step was sustained)."""
    cpu = step.cpu_cores
    evidence = [
        f"CPU (cores): {', '.join(f'{k} {v:.2f}' for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))}"
    ]
    machine = cpu.get("machine", 0.0)
    if machine >= 0.9 * cores:
        evidence.append(f"the machine's {cores:g} cores were {machine / cores:.0%} busy")
    if step.growth_per_s:
        evidence.append(
            "backlog growth per s: " + ", ".join(f"{k} {v:+.0f}" for k, v in step.growth_per_s.items())
        )
    if step.sustained:
        return "", evidence
    http_failed = any(r.startswith(("error rate", "answers trailed", "p99")) for r in step.reasons)
    if step.load.generator_saturated:
        evidence.append(
            "the load generator fell behind its schedule "
            f"(pacer lag p99 {step.load.dispatch_lag.p99_ms:.1f} ms)"
        )
    if server == LEGACY and http_failed and step.load.generator_saturated and machine < 0.9 * cores:
        return "load generator (client side)", evidence
    if server == LEGACY:
        stage = "DB (synchronous commit per request)" if cpu.get("mariadb", 0) >= cpu.get("legacy", 0) else (
            "HTTP (legacy server)"
        )  # fmt: skip
        return stage, evidence
    growth = step.growth_per_s
    threshold = 0.05 * step.scans_per_s
    backlog_failed = any(r.startswith(("backlog", "not drained")) for r in step.reasons)
    end = step.backlog_end
    if backlog_failed and end.get("kafka_lag", 0) > end.get("undelivered", 0) + end.get("pending", 0):
        growth = {**growth, "kafka_lag": max(growth.get("kafka_lag", 0.0), threshold + 1)}
    if growth.get("kafka_lag", 0) > threshold:
        stage = "Redis" if cpu.get("redis", 0) > cpu.get("processor", 0) else "processor"
    elif growth.get("undelivered", 0) + growth.get("pending", 0) > threshold or backlog_failed:
        stage = "DB" if cpu.get("mariadb", 0) > cpu.get("workers", 0) else "workers"
    elif http_failed and step.load.generator_saturated and machine < 0.9 * cores:
        stage = "load generator (client side)"
    elif http_failed:
        stage = "Kafka (produce)" if cpu.get("kafka", 0) > cpu.get("ingest", 0) else "HTTP (ingest)"
    else:
        stage = "undetermined"
    return stage, evidence


def run_max(spec: MaxSpec, run: BenchRun) -> dict[str, Any]:
    say = report.progress_logger(__name__)
    settings, out = run.settings, run.out
    unknown = [p for p in spec.paths if p not in PATH_CHOICES]
    if unknown:
        raise PipelineError(f"unknown path(s) {unknown}; choose from {', '.join(PATH_CHOICES)}")
    (out / "acked").mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    with run.env() as env:
        env.drain(spec.drain_limit_s + spec.cleanup_drain_s)
        env_info = report.environment(settings, {"preset": spec.preset, "spec": spec.to_dict()})
        say(
            f"ceilings: bare Kafka produce at {spec.kafka_latency_rate:g}/s, producer throughput, bare INSERT"
        )
        ceilings = {
            "kafka_produce_latency": kafka_produce_latency(
                settings, rate=spec.kafka_latency_rate, duration_s=spec.kafka_probe_s
            ).to_dict(),
            "kafka_produce_throughput": kafka_produce_throughput(settings, duration_s=spec.kafka_probe_s),
            "bare_insert": bare_insert(settings, rows=spec.insert_rows),
        }
        drop_probe_topic(settings)
        say(
            f"ceilings: produce p99 {ceilings['kafka_produce_latency']['latency_ms']['p99_ms']:.2f} ms, "
            f"{ceilings['kafka_produce_throughput']['messages_per_s']:,.0f} msg/s; "
            f"INSERT {ceilings['bare_insert']['rows_per_s']:,.0f} rows/s"
        )
        with BacklogSampler(settings, 1.0) as backlog:
            searcher = Searcher(env, spec, out, backlog)
            for path in spec.paths:
                server, mode = path.split("-")
                if spec.warmup_s > 0:
                    per = spec.batch_size if mode == "batch" else 1
                    run_load(
                        spec_for(
                            env.url(server), api_key=env.api_key, rate=max(1.0, 200 / per),
                            duration_s=spec.warmup_s,
                            mode="batch" if mode == "batch" else "single", batch_size=spec.batch_size,
                        )
                    )  # fmt: skip
                    env.drain(spec.cleanup_drain_s)
                say(f"searching the ceiling of {path}")
                best, steps = searcher.search(path)
                first_fail = next((s for s in steps if not s.sustained), None)
                results[path] = {
                    "max_sustained_scans_per_s": best,
                    "steps": [s.to_dict() for s in steps],
                    "saturated_stage": first_fail.stage
                    if first_fail
                    else "none (max_rate or max_steps reached)",
                    "first_failure": first_fail.to_dict() if first_fail else None,
                }
                say(
                    f"{path}: {best:,.0f} scans/s sustained; "
                    f"first saturated: {results[path]['saturated_stage']}"
                )
    result = summarise(report.finish_environment(env_info), ceilings, results)
    report.write_json(out / "max.json", result)
    write_charts(out, result)
    (out / "max.md").write_text(markdown(result))
    return result


def summarise(env_info: dict[str, Any], ceilings: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    insert = ceilings["bare_insert"]["rows_per_s"]
    produce = ceilings["kafka_produce_throughput"]["messages_per_s"]
    for name, r in paths.items():
        best = r["max_sustained_scans_per_s"]
        r["fraction_of_bare_insert"] = round(best / insert, 3) if insert else None
        r["fraction_of_kafka_produce"] = (
            round(best / produce, 3) if produce and name.startswith("async") else None
        )
    result: dict[str, Any] = {"command": "max", "environment": env_info, "ceilings": ceilings, "paths": paths}
    result["targets"] = [t.to_dict() for t in targets(result)]
    return result


def targets(result: dict[str, Any]) -> list[report.Target]:
    out: list[report.Target] = []
    batch = result["paths"].get("async-batch")
    if batch is None:
        return [report.check("end-to-end scans/s via the batch API", None, ">=", 20_000)]
    best = batch["max_sustained_scans_per_s"]
    steps = [s for s in batch["steps"] if s["scans_per_s"] == best]
    lost = sum(s["lost"] + s["duplicates"] for s in steps)
    out.append(
        report.check(
            "end-to-end sustained scans/s via the batch API (zero loss)", best, ">=", 20_000, unit=" scans/s",
            fmt="{:,.0f}", note=f"lost/duplicated at that rate: {lost}",
        )
    )  # fmt: skip
    out.append(
        report.check(
            "… as a share of the bare multi-row INSERT ceiling", batch["fraction_of_bare_insert"], ">=", 0.5,
            fmt="{:.0%}", note=f"bare INSERT {result['ceilings']['bare_insert']['rows_per_s']:,.0f} rows/s",
        )
    )  # fmt: skip
    return out
