"""``bench max``: the highest sustained rate per path and API, what saturated first, and the raw ceilings.

A step is *sustained* when errors, schedule lag and client p99 stay in bounds, every acknowledged scan
is stored once and, on the async path, the backlog stays small and drains in time: a rate ingest
accepts but the workers cannot store does not count. The rate grows geometrically until a step fails,
then bisects; the first failing step names the stage that saturated first from backlog growth and CPU
(on 2 shared cores often "the machine's CPU", and then said so).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field, fields
from typing import Any

from barcode_harness.bench import ceilings, procstats, report
from barcode_harness.bench.env import ASYNC, LEGACY, BacklogSampler, BenchEnv, BenchRun, stage_counts
from barcode_harness.bench.loadgen import LoadResult
from barcode_harness.bench.loads import grow_then_bisect, summary_dict
from barcode_harness.bench.maxrate_render import STAGES, markdown, write_charts
from barcode_harness.bench.specs import PATH_CHOICES, MaxSpec
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.probes.backlog import measure

log = logging.getLogger(__name__)
say = report.progress_logger(__name__)


@dataclass
class Step:
    path: str
    scans_per_s: float
    sustained: bool
    reasons: list[str]
    load: LoadResult
    cpu_cores: dict[str, float]
    backlog_start: dict[str, int]
    backlog_end: dict[str, int]
    backlog_growth_per_s: dict[str, float]
    drain_s: float | None
    acknowledged: int
    stored: int
    lost: int
    duplicates: int
    saturated_stage: str = ""
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        # CPU microseconds each stage spent per scan: cores busy ÷ scans per second
        rate, cores = self.scans_per_s, self.cpu_cores.items()
        cpu = {k: round(v / rate * 1e6, 1) for k, v in cores if k in STAGES} if rate > 0 else {}
        return {**out, "load": summary_dict(self.load), "cpu_us_per_scan": cpu}


@dataclass
class Searcher:
    env: BenchEnv
    spec: MaxSpec
    run: BenchRun
    backlog: BacklogSampler
    cores: float = float(os.cpu_count() or 1)

    def _backlog(
        self, scans_per_s: float, t0: float, t1: float
    ) -> tuple[dict[str, int], dict[str, float], float | None, list[str]]:
        """The backlog at the end of a step, its growth per second over the step, the seconds until
        drained, and why the step failed on those (a drain is given up on after ``cleanup_drain_s``)."""
        spec, end, growth = self.spec, stage_counts(measure(self.env.settings)), {}
        window = self.backlog.window(t0, t1)
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            (ta, a), (tb, b) = window[0], window[-1]
            first = stage_counts(a)
            growth = {k: round((v - first[k]) / (tb - ta), 1) for k, v in stage_counts(b).items()}
        in_flight, allowed = sum(end.values()), scans_per_s * spec.backlog_allow_s
        reasons = []
        if in_flight > allowed:
            reasons.append(f"backlog {in_flight} > {allowed:.0f} ({spec.backlog_allow_s:g} s of scans)")
        try:
            drain_s = self.env.drain(spec.drain_limit_s)
        except PipelineError:
            t = time.monotonic()
            try:
                self.env.drain(spec.cleanup_drain_s)
            except PipelineError:
                log.warning("pipeline still not drained after %.0f s", spec.cleanup_drain_s)
            drain_s = spec.drain_limit_s + time.monotonic() - t
            reasons.append(f"not drained within {spec.drain_limit_s:g} s")
        return end, growth, round(drain_s, 2), reasons

    def _split(self, path: str) -> tuple[str, str, int]:
        """A path's server, mode, and scans per request."""
        server, mode = path.split("-")
        return server, mode, self.spec.batch_size if mode == "batch" else 1

    def attempt(self, path: str, scans_per_s: float) -> Step:
        spec = self.spec
        server, mode, per_request = self._split(path)
        start_backlog = stage_counts(measure(self.env.settings)) if server == ASYNC else {}
        cpu0 = procstats.snapshot(self.env.pids(), rest="bench client")
        t0 = time.time()
        load = self.env.load(
            server, rate=scans_per_s / per_request, duration_s=spec.step_s, concurrency=spec.concurrency,
            mode=mode, batch_size=spec.batch_size, acked=self.run.acked(f"{path}-{scans_per_s:.0f}"),
        )  # fmt: skip
        t1 = time.time()
        cpu = procstats.cores_used(cpu0, procstats.snapshot(self.env.pids(), rest="bench client"))
        end_backlog, growth, drain_s, reasons = (
            self._backlog(scans_per_s, t0, t1) if server == ASYNC else ({}, {}, None, [])
        )
        trail, p99 = load.elapsed_s - load.spec.duration_s, load.latency.p99_ms
        check = self.env.verify(server, load)
        reasons += [why for failed, why in (
            (load.error_rate >= spec.max_error_rate,
             f"error rate {load.error_rate:.2%} ({load.status_counts})"),
            (trail > max(1.0, 2 * spec.max_p99_ms / 1000),
             f"answers trailed the schedule by {trail:.1f} s (answered {load.achieved_rps:,.0f}/s)"),
            (p99 > spec.max_p99_ms, f"p99 {p99:,.1f} ms > {spec.max_p99_ms:g} ms"),
            (check.missing or check.duplicate_rows,
             f"{check.missing} acknowledged scans missing, {check.duplicate_rows} duplicate rows"),
        ) if failed]  # fmt: skip
        step = Step(
            path, scans_per_s, not reasons, reasons, load, cpu, start_backlog, end_backlog, growth, drain_s,
            check.acknowledged, check.stored, check.missing, check.duplicate_rows,
        )  # fmt: skip
        step.saturated_stage, step.evidence = diagnose(step, server, self.cores)
        log.info(
            "%s %.0f scans/s: %s (p99 %.1f ms, errors %d, cpu %s)%s",
            path, scans_per_s, "sustained" if step.sustained else "NOT sustained", load.latency.p99_ms,
            load.errors, cpu, "" if step.sustained else f" - {'; '.join(reasons)}",
        )  # fmt: skip
        return step

    def ceiling(self, path: str) -> dict[str, Any]:
        """Geometric growth until a step fails, then ``refine_steps`` bisections, summed up: the highest
        sustained rate, each step, what failed first (after ``warmup_s`` of warm-up at 200 scans/s)."""
        s = self.spec
        server, mode, per_request = self._split(path)
        self.env.warm_up((server,), s.warmup_s, s.cleanup_drain_s, rate=max(1.0, 200 / per_request),
                         mode=mode, batch_size=s.batch_size)  # fmt: skip
        say(f"searching the ceiling of {path}")
        start = s.start_batch if mode == "batch" else s.start_single
        attempt = functools.partial(self.attempt, path)
        best, steps = grow_then_bisect(
            attempt, start, s.growth, s.max_rate, s.refine_steps, s.max_steps, tens=True
        )
        first_fail = next((step for step in steps if not step.sustained), None)
        stage = first_fail.saturated_stage if first_fail else "none (max_rate or max_steps reached)"
        say(f"{path}: {best:,.0f} scans/s sustained; first saturated: {stage}")
        return {
            "max_sustained_scans_per_s": best,
            "steps": [step.to_dict() for step in steps],
            "saturated_stage": stage,
            "first_failure": first_fail.to_dict() if first_fail else None,
        }


def diagnose(step: Step, server: str, cores: float) -> tuple[str, list[str]]:
    """The stage that saturated first, with the evidence (empty stage when the step was sustained)."""
    cpu = step.cpu_cores
    busiest = sorted(cpu.items(), key=lambda kv: -kv[1])
    evidence = ["CPU (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in busiest)]
    machine = cpu.get("machine", 0.0)
    if machine >= 0.9 * cores:
        evidence.append(f"the machine's {cores:g} cores were {machine / cores:.0%} busy")
    if growth := step.backlog_growth_per_s:
        evidence.append("backlog growth per s: " + ", ".join(f"{k} {v:+.0f}" for k, v in growth.items()))
    if step.sustained:
        return "", evidence
    http_failed = any(r.startswith(("error rate", "answers trailed", "p99")) for r in step.reasons)
    if step.load.generator_saturated:
        lag = step.load.dispatch_lag.p99_ms
        evidence.append(f"the load generator fell behind its schedule (pacer lag p99 {lag:.1f} ms)")
    client_bound = http_failed and step.load.generator_saturated and machine < 0.9 * cores
    if server == LEGACY:
        db_bound = cpu.get("mariadb", 0) >= cpu.get("legacy", 0)
        stage = "DB (synchronous commit per request)" if db_bound else "HTTP (legacy server)"
        return "load generator (client side)" if client_bound else stage, evidence
    threshold = 0.05 * step.scans_per_s
    backlog_failed = any(r.startswith(("backlog", "not drained")) for r in step.reasons)
    end = step.backlog_end
    if backlog_failed and end.get("kafka_lag", 0) > end.get("undelivered", 0) + end.get("pending", 0):
        growth = {**growth, "kafka_lag": max(growth.get("kafka_lag", 0.0), threshold + 1)}
    if growth.get("kafka_lag", 0) > threshold:
        stage = "Redis" if cpu.get("redis", 0) > cpu.get("processor", 0) else "processor"
    elif growth.get("undelivered", 0) + growth.get("pending", 0) > threshold or backlog_failed:
        stage = "DB" if cpu.get("mariadb", 0) > cpu.get("workers", 0) else "workers"
    elif client_bound:
        stage = "load generator (client side)"
    elif http_failed:
        stage = "Kafka (produce)" if cpu.get("kafka", 0) > cpu.get("ingest", 0) else "HTTP (ingest)"
    else:
        stage = "undetermined"
    return stage, evidence


def run_max(spec: MaxSpec, run: BenchRun) -> dict[str, Any]:
    settings = run.settings
    if unknown := [p for p in spec.paths if p not in PATH_CHOICES]:
        raise PipelineError(f"unknown path(s) {unknown}; choose from {', '.join(PATH_CHOICES)}")
    with run.started(spec, drain_s=spec.drain_limit_s + spec.cleanup_drain_s) as (env, env_info):
        say(
            f"ceilings: bare Kafka produce at {spec.kafka_latency_rate:g}/s, producer throughput, bare INSERT"
        )
        probe_s = spec.kafka_probe_s
        latency = ceilings.kafka_produce_latency(settings, rate=spec.kafka_latency_rate, duration_s=probe_s)
        raw = {
            "kafka_produce_latency": latency.to_dict(),
            "kafka_produce_throughput": ceilings.kafka_produce_throughput(settings, duration_s=probe_s),
            "bare_insert": ceilings.bare_insert(settings, rows=spec.insert_rows),
        }
        ceilings.drop_probe_topic(settings)
        say(f"ceilings: produce p99 {latency.latency['p99_ms']:.2f} ms, "
            f"{raw['kafka_produce_throughput']['messages_per_s']:,.0f} msg/s; "
            f"INSERT {raw['bare_insert']['rows_per_s']:,.0f} rows/s")  # fmt: skip
        with BacklogSampler(settings, 1.0) as backlog:
            searcher = Searcher(env, spec, run, backlog)
            results = {path: searcher.ceiling(path) for path in spec.paths}
    return run.write("max", summarise(env_info, raw, results), markdown, write_charts)


def summarise(env_info: dict[str, Any], ceilings: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    insert = ceilings["bare_insert"]["rows_per_s"]
    produce = ceilings["kafka_produce_throughput"]["messages_per_s"]
    for name, r in paths.items():
        best = r["max_sustained_scans_per_s"]
        r["fraction_of_bare_insert"] = round(best / insert, 3) if insert else None
        async_path = name.startswith(ASYNC)
        r["fraction_of_kafka_produce"] = round(best / produce, 3) if produce and async_path else None
    result: dict[str, Any] = {"command": "max", "environment": env_info, "ceilings": ceilings, "paths": paths}
    result["targets"] = [t.to_dict() for t in targets(result)]
    return result


def targets(result: dict[str, Any]) -> list[report.Target]:
    batch = result["paths"].get("async-batch")
    if batch is None:
        return [report.check("end-to-end scans/s via the batch API", None, ">=", 20_000)]
    best = batch["max_sustained_scans_per_s"]
    lost = sum(s["lost"] + s["duplicates"] for s in batch["steps"] if s["scans_per_s"] == best)
    return [
        report.check(
            "end-to-end sustained scans/s via the batch API (zero loss)", best, ">=", 20_000, unit=" scans/s",
            fmt="{:,.0f}", note=f"lost/duplicated at that rate: {lost}",
        ),
        report.check(
            "… as a share of the bare multi-row INSERT ceiling", batch["fraction_of_bare_insert"], ">=", 0.5,
            fmt="{:.0%}", note=f"bare INSERT {result['ceilings']['bare_insert']['rows_per_s']:,.0f} rows/s",
        ),
    ]  # fmt: skip
