"""``bench replication``: what replication costs, the single-node and the ``ha`` profile in one run.

The same measurements on both stacks, one after the other: the bare Kafka produce round trip
(``acks=all``; on ha RF=3 with min.insync.replicas=2), single-scan ingest latency at a fixed rate,
and the end-to-end maximum sustained batch rate (on ha the processor also waits for ``WAIT`` on both
Redis replicas). The ha stack lives in its own state directory beside the single-node one.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from barcode_harness import sections
from barcode_harness.bench import report
from barcode_harness.bench.ceilings import drop_probe_topic, kafka_produce_latency
from barcode_harness.bench.docs import REPLICATION
from barcode_harness.bench.env import ASYNC, BacklogSampler, BenchEnv, BenchRun, bench_settings
from barcode_harness.bench.maxrate import Searcher
from barcode_harness.bench.specs import MaxSpec, ReplicationSpec
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.ha_nodes import client_settings
from barcode_pipeline import names

say = report.progress_logger(__name__)

PROFILES = ("single", "ha")
SECTION = REPLICATION
PATH = "async-batch"
QUANTILES = ("p50_ms", "p99_ms", "p999_ms")


def profile_settings(
    base: HarnessSettings, profile: str, database: str, ha_dir: Path | None
) -> HarnessSettings:
    """``profile``'s settings; the ha stack lives in ``ha_dir``, by default ``<BP_STATE_DIR>-ha``."""
    if profile == "single":
        return bench_settings(base.updated({"stack_profile": "single"}), database, fresh=True)
    ha_dir = ha_dir or base.state_dir.with_name(base.state_dir.name + "-ha")
    ha_base = base.updated({"stack_profile": "ha", "state_dir": ha_dir})
    return bench_settings(client_settings(ha_base), database, fresh=True)


def replicas(settings: HarnessSettings) -> dict[str, int]:
    """Replication factor and the smallest in-sync replica set of the event topic, as measured."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    parts = list(admin.list_topics(names.TOPIC, timeout=10).topics[names.TOPIC].partitions.values())
    return {"replication_factor": min(len(p.replicas) for p in parts),
            "min_in_sync": min(len(p.isrs) for p in parts)}  # fmt: skip


def measure_profile(
    settings: HarnessSettings, spec: ReplicationSpec, out: Path, *, start_stack: bool
) -> dict[str, Any]:
    profile = settings.stack_profile
    with BenchEnv(settings, out / f"services-{profile}.log", legacy=False, start_stack=start_stack) as env:
        run = BenchRun(env.settings, out, shared=env)
        env.drain(300)
        info = report.environment(env.settings, {"profile": profile})
        isr = replicas(env.settings)
        say(f"{profile}: replication factor {isr['replication_factor']}, in sync {isr['min_in_sync']}")
        kafka = kafka_produce_latency(env.settings, rate=spec.kafka_rate, duration_s=spec.kafka_s).to_dict()
        drop_probe_topic(env.settings)
        env.warm_up((ASYNC,), 3, 300, rate=50)
        latency = env.load(
            ASYNC, rate=spec.rate, duration_s=spec.duration_s, acked=run.acked(f"{profile}-latency")
        )
        env.drain(300)
        say(f"{profile}: ingest p50 {latency.latency.p50_ms:.1f} ms, p99 {latency.latency.p99_ms:.1f} ms")
        max_spec = MaxSpec(paths=(PATH,), step_s=spec.step_s, start_batch=spec.start_batch, warmup_s=0)
        with BacklogSampler(env.settings, 1.0) as backlog:
            ceiling = Searcher(env, max_spec, run, backlog).ceiling(PATH)
    ingest = {"rate": spec.rate, "duration_s": spec.duration_s, "ok": latency.ok, "errors": latency.errors,
              "latency_ms": latency.latency.to_dict()}  # fmt: skip
    return {
        "profile": profile,
        "environment": info,
        "replicas": isr,
        "redis_wait_replicas": settings.redis.min_replicas,
        "kafka_produce": kafka,
        "ingest_latency": ingest,
        **{k: ceiling[k] for k in ("max_sustained_scans_per_s", "saturated_stage", "steps")},
    }


def run_replication(base: HarnessSettings, spec: ReplicationSpec, out: Path, *, database: str,
                    ha_dir: Path | None, start_stack: bool) -> dict[str, Any]:  # fmt: skip
    started = time.time()
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PROFILES}
    for r in range(spec.rounds):
        for p in PROFILES if r % 2 == 0 else tuple(reversed(PROFILES)):  # neither always goes first
            settings = profile_settings(base, p, database, ha_dir)
            runs[p].append(measure_profile(settings, spec, out / f"round-{r + 1}", start_stack=start_stack))
    profiles = [aggregate(runs[p]) for p in PROFILES]
    result = {"spec": spec.to_dict(), "started_at": started, "duration_s": time.time() - started,
              "profiles": profiles}  # fmt: skip
    return BenchRun(base, out).write("replication", result, markdown)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One profile's figures over the rounds: the median of each (every round kept under ``rounds``)."""
    out = {k: v for k, v in runs[0].items() if k != "steps"}
    for src in ("kafka_produce", "ingest_latency"):
        out[src] = {
            "latency_ms": {q: statistics.median(r[src]["latency_ms"][q] for r in runs) for q in QUANTILES}
        }
    out["max_sustained_scans_per_s"] = statistics.median(r["max_sustained_scans_per_s"] for r in runs)
    out["saturated_stage"] = Counter(r["saturated_stage"] for r in runs).most_common(1)[0][0]
    out["rounds"] = runs
    return out


def markdown(result: dict[str, Any]) -> str:
    single, ha = result["profiles"]
    spec = result["spec"]
    machine = single["environment"]["machine"]
    rows: list[list[str]] = []
    for label, src in (
        ("bare Kafka produce, acks=all (ms)", "kafka_produce"),
        ("ingest POST single scan, until Kafka confirmed (ms)", "ingest_latency"),
    ):
        for q in QUANTILES:
            a, b = single[src]["latency_ms"].get(q), ha[src]["latency_ms"].get(q)
            ratio = f"{b / a:.2f}" if a and b else "-"
            ms = ["-" if v is None else f"{v:.2f}" for v in (a, b)]
            rows.append([f"{label}, {q.removesuffix('_ms')}", *ms, ratio])
    a, b = single["max_sustained_scans_per_s"], ha["max_sustained_scans_per_s"]
    rows.append(["end-to-end maximum sustained rate, batches of 100 (scans/s)", f"{a:,.0f}", f"{b:,.0f}",
                 f"{(b / a if a else 0):.2f}"])  # fmt: skip
    rows.append(["stage that saturated first", single["saturated_stage"], ha["saturated_stage"], ""])
    lines = [
        SECTION[0],
        "## `bench replication`: the cost of replication (single-node vs ha profile)",
        "",
        f"Command: `barcode-pipeline bench replication`{' --quick' if spec['preset'] == 'quick' else ''}; "
        f"both profiles in the same run, one after the other ({result['duration_s'] / 60:.1f} min), on "
        f"{machine.get('cores')} cores, load average at start {machine.get('load_average_at_start')}. "
        "Everything shares those cores, and the ha profile runs 3 brokers, 3 Redis servers and 3 "
        "Sentinels on them: read the ratios more than the absolute figures; other work on the "
        "machine distorts both.",
        "",
        f"- single: 1 broker (RF=1), 1 Redis, processor WAIT for {single['redis_wait_replicas']} replicas.",
        f"- ha: 3 brokers, event topic RF={ha['replicas']['replication_factor']} with "
        f"{ha['replicas']['min_in_sync']} replicas in sync at the start (min.insync.replicas=2): an "
        f"`acks=all` write is confirmed once every in-sync follower has it; processor WAIT for "
        f"{ha['redis_wait_replicas']} Redis replicas before each Kafka commit.",
        f"- Every figure is the median of {spec.get('rounds', 1)} round(s), each measuring both profiles, "
        "the order alternated between rounds; the maximum rates per round were: "
        + "; ".join(
            f"{p['profile']} "
            + ", ".join(f"{r['max_sustained_scans_per_s']:,.0f}" for r in p.get("rounds", []))
            for p in (single, ha)
        )
        + " scans/s.",
        f"- Kafka probe: {spec['kafka_rate']:g} messages/s for {spec['kafka_s']:g} s; ingest: "
        f"{spec['rate']:g} single scans/s for {spec['duration_s']:g} s (open loop, latency from the "
        f"scheduled send); maximum rate: the `bench max` search on async-batch, {spec['step_s']:g} s "
        "per step, sustained = answered on time, no errors, backlog drained, every acknowledged scan "
        "stored once.",
        "",
        report.md_table(("measure", "single", "ha", "ha ÷ single"), rows),
        "",
        SECTION[1],
    ]
    return "\n".join(lines) + "\n"


def write_section(doc: Path, section: str) -> Path:
    """Replace (or append) the replication section of ``doc``; ``bench docs`` carries it over."""
    return sections.write(doc, section, SECTION, "# Benchmarks")
