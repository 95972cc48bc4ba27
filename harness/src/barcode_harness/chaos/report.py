"""``docs/reliability.md``: the fault-injection results, the settings behind them, and their limits; the
``ha`` profile's and the nemesis's results in sections of their own, so each run rewrites only its part."""

from __future__ import annotations

import platform
import re
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from barcode_harness import sections
from barcode_harness.bench import procstats
from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ScenarioResult
from barcode_harness.chaos.schedule import KINDS, MEANING, ScheduleSpec
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter

if TYPE_CHECKING:
    from barcode_harness.chaos.nemesis import NemesisRun


@dataclass
class RunInfo:
    """Everything besides the results that a reader needs to judge them."""

    command: str
    params: ChaosParams
    settings: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    finished_at: str = field(default_factory=lambda: datetime.now().strftime("%Y-%m-%d %H:%M"))
    duration_s: float = 0.0
    spec: ScheduleSpec = field(default_factory=ScheduleSpec)  # a nemesis run's schedule shape


def machine_info() -> dict[str, str]:
    """The machine, as the chaos report's table states it (bench/procstats.py reads it)."""
    m = procstats.machine()
    return {
        "CPU": f"{m['cpu_model']}, {m['cores']} logical cores",
        "memory": f"{m['memory_gb']} GiB",
        "OS": m["os"],
        "Python": platform.python_version(),
    }


def _server_versions(settings: HarnessSettings) -> dict[str, str]:
    """Versions and live durability settings; a server that is gone says so (the report is still written)."""
    out = {"Kafka": settings.kafka_version}
    try:
        with closing(redis_adapter.client(settings, timeout=2)) as client:
            out["Redis"] = str(client.info("server").get("redis_version", "?"))
            aof = client.config_get("append*")
            out["Redis AOF (live)"] = (
                f"appendonly {aof.get('appendonly')}, appendfsync {aof.get('appendfsync')}"
            )
    except Exception as exc:
        out["Redis"] = f"unreachable ({exc})"
    try:
        with closing(db.connect(settings.db.url, autocommit=True)) as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit")
            version, flush = cur.fetchone()
            out["MariaDB/MySQL"], out["innodb_flush_log_at_trx_commit"] = str(version), str(flush)
    except Exception as exc:
        out["MariaDB/MySQL"] = f"unreachable ({type(exc).__name__})"
    return out


def settings_info(settings: HarnessSettings) -> dict[str, str]:
    """The durability and recovery knobs the results depend on."""
    producer = kafka_adapter.producer_config(settings)
    return {
        "producer acks / idempotence": f"acks={producer['acks']}, "
        f"enable.idempotence={producer['enable.idempotence']}",
        "produce timeout (ingest answers 503 after)": f"{settings.kafka.produce_timeout_s:g} s",
        "topic partitions / replication factor": f"{settings.kafka.topic_partitions} / "
        f"{settings.kafka.topic_replication}",
        "Kafka min.insync.replicas (local stack)": "1 (a single broker)",
        "Redis appendfsync (setting)": settings.redis_appendfsync,
        "dedup policy / window": f"{settings.dedup.policy} / {settings.dedup.window_s} s",
        "stream shards": str(settings.streams.shards),
        "worker batch / max delay": f"{settings.worker.batch_size} / {settings.worker.max_delay_ms} ms",
        "worker heartbeat TTL": f"{settings.worker.heartbeat_ttl_s:g} s",
        "claim min idle (live workers' entries)": f"{settings.streams.claim_min_idle_ms} ms",
        "max deliveries before the DLQ": str(settings.streams.max_deliveries),
        "workers": str(settings.worker.count),
        "ingest processes": str(settings.ingest.processes),
    } | _server_versions(settings)


def num(value: object, digits: int = 1) -> str:
    """A number for a table cell: ``-`` where there is none."""
    return f"{value:.{digits}f}" if isinstance(value, float) else "-" if value is None else str(value)


def cell(text: str) -> str:
    """Text for a table cell: one line, its pipes escaped."""
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


LIMITS_INTRO = """\
## What a single node cannot survive

Every scenario above kills or stops a *process*. The operating system, its page cache and the disk
survive, which is why a SIGKILLed Kafka broker comes back with everything it had acknowledged.
Redis on `appendfsync everysec` is the exception the processor covers itself: while the previous
fsync still runs (up to 2 s), Redis answers writes before it has written them to its AOF, so a
SIGKILL then loses writes it had answered, after the processor committed their offsets. The
restarted server has a new run id; the processor notices it (with each batch, and once a second
when idle, or from the run id in the commit mark when it took the partition over) and re-reads the
last `BP_REDIS_REWIND_WINDOW_S` (10 s) from Kafka. Before that rewind existed, the combined
scenario lost 5 scans in one CI run; this is the path that explains it (the fsync is slow only on a
busy disk, so it did not recur here in 25 runs). This stack runs one broker, one Redis and one
MariaDB on one machine, so it cannot survive losing the machine or its disk:
"""

# (what is lost, what it costs on this single-node stack, what covers it in production)
LIMITS: tuple[tuple[str, str, str], ...] = (
    ("the Kafka broker's disk (or the whole machine)", "every scan acknowledged with 202 but not yet in "
     "the database (the Kafka lag plus the Redis backlog, normally well under a second of traffic), and "
     "the replay source for the last 7 days", "`replication.factor=3`, `min.insync.replicas=2` with "
     "`acks=all` (already set), brokers on separate machines and racks: a 202 then means two brokers hold "
     "the scan"),
    ("the Kafka broker, only for a while", "nothing acknowledged; ingest answers 503 until it is back "
     "(scenario 1) and clients resend from their outbox", "the same replication: a follower takes over "
     "leadership within seconds and ingest keeps answering 202"),
    ("power or the kernel, with Redis on `appendfsync everysec`", "up to about 2 s of Redis writes, "
     "answered before they reached the disk. The restarted server's new run id makes the processor "
     "re-read the last `BP_REDIS_REWIND_WINDOW_S` from Kafka, so they are published again; a longer loss "
     "needs `barcode-pipeline replay --since` (scenario 10)", "`appendfsync always`, or a replica plus "
     "`WAIT 1 <ms>` before the processor commits offsets; Redis Sentinel or Cluster for failover"),
    ("Redis's disk", "streams, pending lists and dedup markers. The database's UNIQUE index still "
     "prevents duplicates, and `replay --since` re-drives from Kafka (scenario 10)", "a Redis replica on "
     "another machine (with `WAIT`), AOF on durable storage"),
    ("MariaDB's disk", "every stored scan", "semi-synchronous replication or a Galera cluster (a commit "
     "acknowledged by two nodes), plus binlog backups for point-in-time recovery"),
    ("a scanner PC's disk", "scans in its outbox that were not yet acknowledged", "out of the pipeline's "
     "reach; the outbox is fsynced per transaction (`synchronous=FULL`)"),
)  # fmt: skip

LIMITS_OUTRO = """\
Kafka also does not fsync each write by default (`flush.messages` is unset); it relies on
replication for durability. With a single broker, a power loss can therefore lose the last
acknowledged writes: another reason production needs three brokers.
"""


def render(results: list[ScenarioResult], info: RunInfo) -> str:
    p = info.params
    passed = sum(r.ok for r in results)
    lines = [
        "# Reliability: fault injection results",
        "",
        f"<!-- Generated by `{info.command}`; edits are overwritten on the next run. -->",
        "",
        "The central promise: **a scan that got a 2xx from the ingest API is stored exactly once**, "
        "whatever crashes. Each scenario below runs the whole pipeline (ingest, processor, two "
        f"workers) under a steady {p.rate:.0f} scans/s from simulated scanners that keep every scan "
        "in a durable outbox and resend it until they get a 2xx "
        f"({p.duplicate_ratio:.0%} of scans are also resent on purpose). After {p.warmup_s:g} s the "
        f"fault is injected and kept for {p.hold_s:g} s, then healed; the load stops at the heal. "
        "Once the clients have nothing pending and nothing is in flight between Kafka and the "
        "database, every acknowledged scan is looked up in the database and in the dead-letter "
        "stores (`barcode:dlq`, `barcode-events.dlt`).",
        "",
        f"**{passed} of {len(results)} scenarios passed** (finished {info.finished_at}, "
        f"{info.duration_s / 60:.1f} min). Targets: 0 acknowledged scans lost, 0 duplicates, a dead "
        f"worker's pending entries taken over within {p.takeover_target_s:g} s, drained within "
        f"{p.drain_target_s:g} s of the heal.",
        "",
        "| # | scenario | injected | sent | acknowledged | stored | dead-lettered | lost | duplicates "
        "| client retries | heal → drained (s) | takeover (s) | result |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.key} | {cell(r.title)} | {cell(r.fault)} | {r.sent} | {r.acknowledged} | {r.stored} "
            f"| {r.dead_lettered} | {r.lost} | {r.duplicates} | {r.client_retries} | {num(r.drain_s)} "
            f"| {num(r.takeover_s, 2) if r.reports_takeover else ''} | {'pass' if r.ok else '**FAIL**'} |"
        )
    lines += [
        "",
        "Columns: *sent* = scans the clients generated (their own resends included) plus what the "
        "scenario sent itself; *acknowledged* = distinct scans answered with a 2xx; *stored* = of "
        "those, with a row; *dead-lettered* = of those, without a row but in a dead-letter store with "
        "a reason; *lost* = neither; *duplicates* = rows beyond the first for any scan; *client "
        "retries* = failed attempts (503, timeouts, refused connections) the clients resent; "
        "*takeover* = time until a dead worker's pending entries were all acknowledged or claimed by "
        "a live worker (scenario 5: from the restart, as nobody else is alive).",
        "",
        "Reading the times: *heal → drained* starts when the repair starts, so it includes the "
        "server's own restart. After a SIGKILL, a single KRaft broker may only register again once "
        "its previous session has expired (`broker.session.timeout.ms`, 3 s in this stack), and "
        "clients then reconnect with backoff. A restarted processor gets its partitions back at once: "
        "the supervisor gives it a static group membership (`group.instance.id`) under its name, so "
        "it does not wait for the old member's session (`session.timeout.ms`, 10 s) to expire. "
        "A worker is declared dead when its heartbeat key expires (the heartbeat TTL), and its "
        "entries are claimed at the next sweep (every second).",
        "",
        "## Details per scenario",
        "",
    ]
    for r in results:
        lines += [f"### {r.key}. {r.title} — {'pass' if r.ok else 'FAIL'}", "", f"Fault: {r.fault}.", ""]
        lines += [f"- {cell(note)}" for note in r.notes]
        lines += [f"- {'✅' if c.ok else '❌'} {cell(c.name)}" + (f": {cell(c.detail)}" if c.detail else "")
                  for c in r.checks]  # fmt: skip
        lines.append("")
    lines += ["## Settings used", "", "| setting | value |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in info.settings.items()]
    lines += [
        f"| client load | {p.rate:g} scans/s over 3 devices, resend ratio {p.duplicate_ratio:g}, "
        "retry back-off 0.1 s doubling to 2 s |",
        f"| warmup / hold / drain timeout | {p.warmup_s:g} s / {p.hold_s:g} s / {p.drain_timeout_s:g} s |",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in info.machine.items()]
    lines += [
        "",
        "Every service, the three servers and the load generator share this machine's cores.",
        "",
        LIMITS_INTRO,
        "| lost | what it costs here | what covers it in production |",
        "|---|---|---|",
        *(f"| {lost} | {cost} | {cover} |" for lost, cost, cover in LIMITS),
        "",
        LIMITS_OUTRO,
        "## Reproducing",
        "",
        "```sh",
        "# on a disposable stack: the run kills its servers (see `barcode-pipeline chaos --help`)",
        f"{info.command}",
        "```",
        "",
        "The same scenarios run at CI scale in `tests/harness/chaos/` (short holds, private stack on its own "
        "ports).",
        "",
    ]
    return "\n".join(lines)


def write_report(path: Path, results: list[ScenarioResult], info: RunInfo) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(results, info)
    for kept in sections.carried(path.read_text()) if path.exists() else []:
        text = text.rstrip("\n") + "\n\n" + kept  # owned by `chaos nemesis` / `chaos --profile ha`
    path.write_text(text)
    return path


HA_CANNOT_SURVIVE = (
    ("two of the three brokers", "partitions lose min.insync.replicas=2: ingest answers 503 (nothing "
     "acknowledged is lost while one in-sync replica survives), the quorum has no majority"),
    ("the Redis primary and both replicas", "the streams, pending lists and markers: re-drive with "
     "`barcode-pipeline replay --since` (the UNIQUE key keeps it free of duplicates)"),
    ("MariaDB's disk", "every stored scan: MariaDB is a single server in this profile, the remaining "
     "single point (restore from backup; its restart is covered by the single-node suite)"),
    ("power on every node at once", "an acknowledgement is replication, not an fsync: writes all "
     "in-sync replicas had only in the page cache, and Redis's last second (appendfsync everysec)"),
)  # fmt: skip


HA_WAIT_OFF_NOTE = (
    "The WAIT-off run is evidence, not a pass condition. Without WAIT the processor commits what "
    "only the primary holds; the rewind after the primary change still re-drives the last "
    "`BP_REDIS_REWIND_WINDOW_S` of committed records, and workers reading the old primary may "
    "already have stored its entries, so a loss shows only when the lost writes were neither "
    "replicated, nor read by a worker, nor inside the window."
)
HA_COLUMNS_NOTE = (
    "Failover: from the fault until every partition of the event topic has a live leader other "
    "than the faulty broker, a new controller leads the quorum, or Sentinel names a new primary. "
    "Drain: from the heal (the restart begun, the link restored) until nothing is in flight. "
    "Client retries: requests the outbox-backed scanners resent (503s, connection errors). "
    "For the app-host kill, failover is the takeover: from the kill until the surviving host's "
    "processor owns every partition."
)


def ha_settings_info(settings: HarnessSettings) -> dict[str, str]:
    """The replication and failover knobs the results depend on."""
    return {
        "Kafka brokers / topic RF / min.insync.replicas": f"3 / {settings.kafka.topic_replication} / 2",
        "Redis replicas / min-replicas-to-write": "2 / 1",
        "processor WAIT (BP_REDIS_MIN_REPLICAS, timeout)": f"{settings.redis.min_replicas}, "
        f"{settings.redis.wait_timeout_ms} ms",
        "rewind safety window": f"{settings.redis.rewind_window_s:g} s",
        "produce timeout (ingest answers 503 after)": f"{settings.kafka.produce_timeout_s:g} s",
        "workers": str(settings.worker.count),
    }


def _app_tier(results: list[ScenarioResult]) -> list[str]:
    """The app-host kill's own timings, one paragraph per run that had it."""
    out: list[str] = []
    for r in [r for r in results if "lb_down_s" in r.metrics]:
        m = r.metrics
        out += [
            f"{r.key} {r.name}: two app hosts (`barcode-pipeline run` in namespaces bpapp1 and "
            f"bpapp2, node names app1 and app2) behind HAProxy, which health-checks `/ready`; the "
            f"scanners only know HAProxy's address. HAProxy took app1 out of the rotation "
            f"{num(m.get('lb_down_s'))} s after the kill; app2's processor owned every partition after "
            f"{num(m.get('takeover_s'))} s (the dead static members' session timeout); app2's workers "
            f"had claimed the {m.get('pending_at_kill', 0)} entries app1's workers held after "
            f"{num(m.get('claimed_s'))} s (their heartbeats' TTL). Once drained, app1 started again "
            f"under its own name; `run` was refused {m.get('restart_refused', 0)} time(s) before its old "
            "lease expired.",
            "",
        ]
    return out


def render_ha_section(runs: list[tuple[str, list[ScenarioResult]]], info: RunInfo) -> str:
    """The ``ha`` profile's section, rewritten in place by ``chaos --profile ha``; ``runs``: (label of the
    run, its results), e.g. WAIT on and WAIT off."""
    lines = [
        sections.HA[0],
        "## ha profile: replicated Kafka and Redis with failover",
        "",
        "3 KRaft nodes (RF=3, min.insync.replicas=2, unclean election off), a Redis primary with 2 "
        "replicas (AOF, `min-replicas-to-write 1`) and 3 Sentinels, one MariaDB; every node in its "
        "own network namespace (`barcode-pipeline stack up --profile ha`). The processor commits "
        "Kafka offsets only after `WAIT` confirmed the batch on the replicas, and rewinds its group "
        "after a Redis primary change.",
        "",
        f"Command: `{info.command}`, finished {info.finished_at}, {info.duration_s / 60:.1f} min; load "
        f"{info.params.rate:g} scans/s from outbox-backed scanners, faults held {info.params.hold_s:g} s.",
        "",
    ]
    for label, results in runs:
        lines += [f"### {label}", "",
                  "| scenario | fault | acknowledged | stored | lost | duplicates | failover (s) | "
                  "drain after heal (s) | records rewound | client retries | result |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in results:
            verdict = "PASS" if r.ok else "FAIL: " + "; ".join(f"{c.name} ({c.detail})" for c in r.failures)
            lines.append(
                f"| {r.key} {r.name} | {r.fault} | {r.acknowledged} | {r.stored} | {r.lost} | "
                f"{r.duplicates} | {num(r.metrics.get('failover_s'))} | {num(r.drain_s)} | "
                f"{num(r.metrics.get('rewound'))} | {r.client_retries} | {verdict} |"
            )
        lines.append("")
    lines += [HA_COLUMNS_NOTE, ""]
    lines += _app_tier(runs[0][1] if runs else [])
    if len(runs) > 1:
        lines += [HA_WAIT_OFF_NOTE, ""]
    lines += ["### What this topology cannot survive", "", "| lost | consequence |", "|---|---|"]
    lines += [f"| {what} | {why} |" for what, why in HA_CANNOT_SURVIVE]
    lines += ["", "Settings behind these results:", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.settings.items()]
    return "\n".join([*lines, "", sections.HA[1], ""])


def nemesis_markers(spec: ScheduleSpec) -> tuple[str, str]:
    """The section a run writes: a long schedule (the soak-length one) does not replace the series."""
    return sections.LONG_NEMESIS if spec.duration_s >= sections.LONG_NEMESIS_S else sections.NEMESIS


def render_nemesis_section(runs: list[NemesisRun], info: RunInfo) -> str:
    p, s = info.params, info.spec
    passed = sum(1 for r in runs if r.result.ok)
    drains = [r.stats.last_heal_to_drained_s for r in runs if r.stats.last_heal_to_drained_s is not None]
    kinds = {(f.target, f.kind) for r in runs for f in r.stats.faults}
    begin, end = nemesis_markers(s)
    kinds_shown = (*KINDS, "full") if s.fills else KINDS
    long = " (a long schedule)" if (begin, end) == sections.LONG_NEMESIS else ""
    lines = [
        begin,
        f"## Nemesis: random overlapping faults{long}",
        "",
        "`barcode-pipeline chaos nemesis` draws a fault schedule from a seed (`random.Random(seed)`) and "
        f"runs it under the same {p.rate:.0f} scans/s client load and the same ledger as the scenarios "
        "above: every acknowledged scan stored or dead-lettered, none stored twice, nothing stored that "
        f"was never sent. A schedule spans {s.duration_s:g} s; faults start in its first "
        f"{s.active_share:.0%} as a Poisson process (mean gap {s.mean_gap_s:g} s), each on a random "
        f"target and of a random kind, held {s.min_for_s:g}-{s.max_for_s:g} s (a processor pause is "
        f"sometimes {s.long_pause_s:g} s, past its session timeout). Faults on different targets "
        "overlap; faults on one target follow each other. The load runs until the schedule's end "
        "and the last fault is healed; the drain is timed from the later of the two. A client whose "
        "outbox holds a backlog after an outage resends it through the batch endpoint (up to 100 "
        "scans a request), as a scanner catching up would; new scans still go one per request.",
        "",
        "| kind | on a service (processor, worker-N) | on a server (Kafka, Redis, MariaDB) |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {MEANING[(k, 'service')]} | {MEANING[(k, 'server')]} |" for k in KINDS]
    if s.fills:
        lines += [f"| full | - | {MEANING[('full', 'server')]}; the disk: {MEANING[('full', 'disk')]} |"]
    lines += [
        "",
        f"**{passed} of {len(runs)} iterations passed** (finished {info.finished_at}, "
        f"{info.duration_s / 60:.1f} min); {sum(r.result.lost for r in runs)} acknowledged scans lost, "
        f"{sum(r.result.duplicates for r in runs)} duplicates; last heal → drained at most "
        f"{num(max(drains) if drains else None)} s (target {p.drain_target_s:g} s); "
        f"{len(kinds)} distinct (target, kind) pairs exercised.",
        "",
        f"| seed | faults | overlapping pairs | kinds ({'/'.join(kinds_shown)}) | acknowledged | stored "
        "| lost | duplicates | last heal → drained (s) | result |",
        "|--:|--:|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for r in runs:
        counts = "/".join(str(sum(1 for f in r.stats.faults if f.kind == k)) for k in kinds_shown)
        lines.append(
            f"| {r.stats.seed} | {len(r.stats.faults)} | {r.stats.overlapping_pairs} | {counts} "
            f"| {r.result.acknowledged} | {r.result.stored} | {r.result.lost} | {r.result.duplicates} "
            f"| {num(r.stats.last_heal_to_drained_s)} | {'pass' if r.result.ok else '**FAIL**'} |"
        )
    flat = [
        (r.stats.seed, c) for r in runs for c in r.result.checks if "RSS" in c.name or "descriptors" in c.name
    ]
    if flat:
        first = runs[0].stats
        lines += ["", f"Memory and descriptors across the schedule ({first.samples} readings for seed "
                  f"{first.seed}, the soak's checks):", ""]  # fmt: skip
        lines += [
            f"- seed {seed}: {'✅' if c.ok else '❌'} {cell(c.name)}: {cell(c.detail) or 'none'}"
            for seed, c in flat
        ]
    failed = [r for r in runs if not r.result.ok]
    if failed:
        lines += ["", "### Failed iterations", ""]
        for r in failed:
            lines += [f"Seed {r.stats.seed}:", ""]
            lines += [f"- ❌ {cell(c.name)}: {cell(c.detail)}" for c in r.result.failures]
            if r.result.error:
                lines.append(f"- error: {cell(r.result.error)}")
            lines += ["", "```", *r.stats.done, "```", ""]
    lines += [
        "",
        "Replay one seed exactly (the schedule is printed before it runs, and each executed step is "
        "in the pipeline log with its offset):",
        "",
        "```sh",
        "# on a disposable stack, as for `chaos all`",
        f"{info.command}",
        "barcode-pipeline chaos nemesis --seed <seed> --duration "
        f"{s.duration_s:g} --iterations 1 --no-report",
        "```",
        "",
        end,
        "",
    ]
    return "\n".join(lines)


def write_nemesis_section(path: Path, runs: list[NemesisRun], info: RunInfo) -> Path:
    return sections.write(path, render_nemesis_section(runs, info), nemesis_markers(info.spec))
