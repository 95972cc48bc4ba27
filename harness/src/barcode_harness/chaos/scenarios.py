"""The fault scenarios: what breaks (``inject``), how it is repaired (``heal``), and which extra facts
prove the mechanism each targets; the harness runs them all the same way."""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from barcode_harness.chaos import checks, faults
from barcode_harness.chaos.checks import Ledger, TakeoverProbe
from barcode_harness.chaos.context import ChaosContext
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.domain import ScanEvent, named_fields
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.monitoring.exporter import live_workers
from barcode_pipeline.ops import dlq, dlt
from barcode_pipeline.ops.dead_letters import DeadLetter
from barcode_pipeline.run.pipeline import wait_drained
from barcode_pipeline.run.supervisor import ChildSpec, Supervisor
from barcode_pipeline.run.watchdog import read_state
from barcode_pipeline.worker.crash import CRASH_AFTER_COMMIT_ENV, CRASH_BEFORE_COMMIT_ENV, CRASH_EXIT_CODE

ABSORBED = re.compile(r"(\d+) duplicates absorbed")  # the workers' line for a batch that came again


def absorbed(ctx: ChaosContext, scenario: Scenario) -> int:
    """The duplicates the workers logged as absorbed during ``scenario`` (also kept in its metrics)."""
    n = ctx.logged_since(f"=== scenario {scenario.key} {scenario.name}:", ABSORBED)
    ctx.metrics["duplicates_absorbed"] = n
    return n


def drained_after_heal(ctx: ChaosContext, last_heal: float, since: str) -> float | None:
    """Seconds from ``last_heal`` (monotonic; 0: none) to the drain, kept and checked against the target."""
    drained = ctx.metrics.get("drained_at")
    if not isinstance(drained, float) or not last_heal:
        return None
    took = ctx.metrics["last_heal_to_drained_s"] = drained - last_heal
    target = ctx.params.drain_target_s
    ctx.check(f"drained within {target:.0f} s of the last heal", took <= target,
              f"{took:.1f} s after {since}")  # fmt: skip
    return took


class Scenario:
    """Base: a fault that is injected, kept for ``hold_s``, then healed. Subclasses override the hooks."""

    key = ""  # short id: "1", "6b", ...
    name = ""  # CLI name: "kafka-kill"
    title = ""  # one line for the report
    fault = ""  # what is done, for the report
    expects_dead_letters = False  # acknowledged scans may legitimately end in a dead-letter store
    reports_takeover = False  # the scenario measures a dead worker's takeover time

    def load_url(self, settings: HarnessSettings) -> str | None:
        """Where the clients send (default: the pipeline's own ingest); e.g. a load balancer."""
        return None

    def before_load(self, ctx: ChaosContext) -> None:
        """Set-up once the pipeline is healthy and empty, before the load starts. Default: none."""

    def inject(self, ctx: ChaosContext) -> None:
        raise NotImplementedError

    def hold(self, ctx: ChaosContext) -> None:
        ctx.sleep(max(0.0, ctx.params.hold_s - ctx.since_inject()))

    def heal(self, ctx: ChaosContext) -> None:
        """Undo the fault. Default: nothing to undo (the fault was instantaneous)."""

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        """Extra checks once everything drained and the ledger was taken."""

    def cleanup(self, ctx: ChaosContext) -> None:
        """Always runs (also after a failure): leave the stack and pipeline whole for the next one."""


class ServerKill(Scenario):
    """SIGKILL (or a clean stop of) one server of the stack, restart it at heal."""

    def __init__(self, key: str, component: str, *, clean_stop: bool = False) -> None:
        self.key, self.component, self.clean_stop = key, component, clean_stop
        self.name = f"{component}-{'stop' if clean_stop else 'kill'}"
        label = {"kafka": "Kafka broker", "redis": "Redis", "mariadb": "MariaDB"}[component]
        self.title = f"{label} {'stopped cleanly' if clean_stop else 'SIGKILL'} and restarted"
        how = "clean shutdown" if clean_stop else "SIGKILL"
        self.fault = f"{how} of {component}, restarted after the hold"
        self._before: checks.RedisState | None = None
        self._probe: faults.IngestProbe | None = None

    def inject(self, ctx: ChaosContext) -> None:
        comp = ctx.stack.component(self.component)
        if self.component == "redis":
            self._before = checks.redis_state(ctx.settings)
        (comp.stop if self.clean_stop else comp.kill)()
        ctx.check(f"{self.component} is down during the hold", comp.pid() is None)
        if self.component == "kafka":  # what a client is told while the broker is away
            self._probe = faults.IngestProbe(ctx.settings)

    def _probe_checks(self, ctx: ChaosContext, a: faults.IngestProbe) -> None:
        a.stop()
        ctx.extra_sent += sum(a.statuses.values())
        ctx.extra_acked.update(a.acknowledged)
        ctx.note(f"one request every 0.5 s while Kafka was down: {a.summary()}")
        bare, n503 = a.unavailable_without_retry_after, a.statuses[503]
        ctx.check("ingest answered 503 with Retry-After while Kafka was down", n503 > 0 and bare == 0,
                  f"{n503} 503s, {bare} without Retry-After")  # fmt: skip
        bad = sum(n for status, n in a.statuses.items() if status == 0 or (status >= 500 and status != 503))
        ctx.check("no 500 and no request left unanswered while Kafka was down", bad == 0,
                  a.summary())  # fmt: skip

    def heal(self, ctx: ChaosContext) -> None:
        if self._probe is not None:
            self._probe_checks(ctx, self._probe)
            self._probe = None
        started = time.monotonic()
        ctx.stack.component(self.component).start()
        ctx.note(f"{self.component} healthy again {time.monotonic() - started:.1f} s after the restart began")
        if self._before is not None:
            ctx.checks.extend(checks.compare_redis_state(ctx.settings, self._before))

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._probe is not None:
            self._probe.stop()
        ctx.stack.component(self.component).start()


def appended_since(aof: Path, copy: Path, command: bytes) -> int:
    """The ``command``s in ``aof``'s files past its earlier ``copy`` (a file it lacks counts whole)."""
    copied = {old.name: old.stat().st_size for old in copy.glob("*.incr.aof")}
    return sum(
        live.read_bytes()[copied.get(live.name, 0) :].count(command) for live in aof.glob("*.incr.aof")
    )


class RedisLostTail(Scenario):
    """Redis comes back from a crash without answered writes whose offsets the processor committed
    (``appendfsync everysec``), made certain here: the processor must notice the new run id and
    re-read the last ``BP_REDIS_REWIND_WINDOW_S`` from Kafka."""

    key = "3b"
    name = "redis-lost-tail"
    title = "Redis SIGKILL, restarted without its last 2 s of answered writes"
    fault = ("workers stopped, a copy of Redis's AOF taken under load, 2 s more load, SIGKILL, Redis started "
             "on the copy, workers started again")  # fmt: skip
    LOST_S = 2.0

    _lost = 0  # stream entries the rolled-back AOF lacks

    def inject(self, ctx: ChaosContext) -> None:
        comp = ctx.stack.component("redis")
        aof = comp.home / "data" / "appendonlydir"
        copy = ctx.workdir / "aof-copy"
        shutil.rmtree(copy, ignore_errors=True)
        for name in ctx.sup.names(names.Role.WORKER):
            faults.stop_child(ctx.sup, name)
        shutil.copytree(aof, copy)  # mid-write, the last command may be cut: Redis drops it on load
        ctx.sleep(self.LOST_S)
        comp.kill()
        self._lost = appended_since(aof, copy, b"XADD")
        shutil.rmtree(aof)
        shutil.copytree(copy, aof)
        ctx.mark(f"redis-lost-tail: SIGKILL, AOF rolled back {self.LOST_S:.0f} s")

    def heal(self, ctx: ChaosContext) -> None:
        self.cleanup(ctx)  # Redis on the copy, the workers back
        # Counted in the files: the processor republishes them at once after.
        ctx.check("Redis came back without entries it had answered", self._lost > 0,
                  f"{self._lost} stream entries lost with the AOF's tail")  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        ctx.stack.component("redis").start()
        faults.resume(ctx.sup, *ctx.sup.names(names.Role.WORKER))


class Scheduled(Scenario):
    """Faults at set shares of the hold, all run from ``inject`` (the hold only waits out the rest)."""

    # (share of the hold at which the step starts, step): "processor", "worker", or a server's name
    schedule: tuple[tuple[float, str], ...] = ()
    last_heal = 0.0  # monotonic: when the last `stack up` returned
    _killed = 0

    def inject(self, ctx: ChaosContext) -> None:
        for share, step in self.schedule:
            ctx.sleep(max(0.0, share * ctx.params.hold_s - ctx.since_inject()))
            if step == "processor":
                self._processor(ctx)
            elif step == "worker":
                self._worker(ctx)
            else:
                self._server(ctx, step)

    def _processor(self, ctx: ChaosContext) -> None:
        victim = ctx.sup.names(names.Role.PROCESSOR)[0]
        checks.polled(ctx.sup.children[victim].alive, bool, False, 15)  # the supervisor may be restarting it
        faults.kill_child(ctx.sup, victim, restart=True)
        self._killed += 1
        ctx.mark(f"{self.name}: processor SIGKILL #{self._killed} (the supervisor restarts it)")

    def _worker(self, ctx: ChaosContext) -> None:
        victim = ctx.sup.names(names.Role.WORKER)[0]
        consumer = names.node_member(ctx.settings.node_name, victim)
        held = checks.wait_pending(ctx.settings, consumer, at_least=1, timeout=10.0)
        faults.kill_child(ctx.sup, victim, restart=True)
        ctx.mark(f"{self.name}: {victim} SIGKILL holding {held} entries (the supervisor restarts it)")
        ctx.check(f"{victim} held pending entries when killed", held > 0, f"{held} entries")

    def _server(self, ctx: ChaosContext, component: str) -> None:
        ctx.stack.component(component).kill()
        ctx.mark(f"{self.name}: {component} SIGKILL; `stack up`")
        started = time.monotonic()
        result = faults.run_cli(ctx.settings, ["stack", "up"], timeout=120)
        self.last_heal = time.monotonic()
        ctx.mark(f"{self.name}: `stack up` rc {result.returncode} after {self.last_heal - started:.1f} s")
        ctx.check(f"`stack up` after the {component} kill succeeded", result.returncode == 0,
                  result.stderr.strip()[-300:])  # fmt: skip
        ctx.note(f"{component}: `stack up` took {self.last_heal - started:.1f} s")

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        drained_after_heal(ctx, self.last_heal, "the last `stack up` returned")


class ProcessorKill(Scheduled):
    key = "2"
    name = "processor-kill"
    title = "Processor SIGKILL under load (three times), restarted by the supervisor"
    fault = ("SIGKILL of the processor 3x during the hold, wherever it is in its consume-publish-commit "
             "cycle; the supervisor restarts it each time")  # fmt: skip
    schedule = ((0.0, "processor"), (1 / 3, "processor"), (2 / 3, "processor"))

    def heal(self, ctx: ChaosContext) -> None:
        self.cleanup(ctx)
        ctx.note(f"processor killed {self._killed} times; restarted by the supervisor each time")

    def cleanup(self, ctx: ChaosContext) -> None:
        faults.resume(ctx.sup, ctx.sup.names(names.Role.PROCESSOR)[0])


class Takeover(Scenario):
    """Base of the worker deaths: times how long the entries a dead worker held stay with it."""

    reports_takeover = True
    _probe: TakeoverProbe | None = None
    taken_over = clock = ""  # the takeover check's name and its clock, e.g. "from the kill"
    metric, digits = "takeover_s", 2  # where the takeover time is kept, and its digits in the check

    def _held(self, ctx: ChaosContext, probe: TakeoverProbe, check: str) -> None:
        self._probe = probe
        ctx.metrics["pending_at_kill"] = probe.initial
        # With nothing held, "every held entry was taken over" would pass without a takeover.
        ctx.check(check, probe.initial > 0, f"{probe.initial} entries")

    def hold(self, ctx: ChaosContext) -> None:
        super().hold(ctx)
        if self._probe is not None:  # not healed until a started probe saw the entries taken over
            self._probe.join(max(0.0, ctx.params.takeover_target_s + 10 - ctx.since_inject()))

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        if self._probe is None:
            return
        self._probe.stop()
        took = self._probe.done_after_s
        ctx.metrics[self.metric] = took
        target = ctx.params.takeover_target_s
        when = "never" if took is None else f"{took:.{self.digits}f} s"
        ctx.check(f"{self.taken_over} within {target:.0f} s", took is not None and took <= target,
                  f"{self._probe.initial} entries, {when} {self.clock}")  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._probe is not None:
            self._probe.close()


# all_workers -> name, title, fault, the takeover check and its clock
WORKER_KILLS = {
    True: ("workers-kill-all", "All workers SIGKILL together, restarted after the hold",
           "SIGKILL of every worker at once; restarted after the hold (they recover their own entries)",
           "restarted workers re-processed the entries they held", "from the restart"),
    False: ("worker-kill", "One worker SIGKILL mid-batch, not restarted during the hold",
            "SIGKILL of worker-1 while it holds entries; the live worker must take them over",
            "the live worker took over the dead worker's entries", "from the kill"),
}  # fmt: skip


class WorkerKill(Takeover):
    """SIGKILL worker(s) while they hold entries; measure how long their entries stay with them."""

    def __init__(self, key: str, *, all_workers: bool) -> None:
        self.key, self.all_workers = key, all_workers
        self.name, self.title, self.fault, self.taken_over, self.clock = WORKER_KILLS[all_workers]
        self._victims: list[str] = []

    def inject(self, ctx: ChaosContext) -> None:
        workers = ctx.sup.names(names.Role.WORKER)
        self._victims = workers if self.all_workers else workers[:1]
        held, probe = self._frozen_holding(ctx, len(workers))
        for name in self._victims:
            faults.kill_child(ctx.sup, name, restart=False)
        probe.started = time.monotonic()
        ctx.mark(f"SIGKILL {', '.join(self._victims)} (first held {held} entries just before)")
        ctx.note(f"{', '.join(self._victims)} held {probe.initial} pending entries when killed")
        self._held(ctx, probe, "the killed worker(s) held pending entries")
        if not self.all_workers:
            probe.start()

    def _frozen_holding(self, ctx: ChaosContext, workers: int) -> tuple[int, TakeoverProbe]:
        """The victims stopped (SIGSTOP) while the first holds entries, and what they hold: running, a
        worker could acknowledge its batch between the look and the kill (one was, 25 ms later)."""
        # Under load a worker holds about rate x max-delay / workers entries; aim for a full hand.
        at_least = max(1, int(ctx.params.rate * ctx.settings.worker.max_delay_ms / 1000 / workers / 2))
        consumers = [names.node_member(ctx.settings.node_name, v) for v in self._victims]
        for _ in range(5):
            held = checks.wait_pending(ctx.settings, consumers[0], at_least=at_least, timeout=10.0)
            for name in self._victims:
                ctx.sup.kill(name, signal.SIGSTOP)
            probe = TakeoverProbe(ctx.settings, consumers)
            if probe.initial > 0:
                return held, probe
            for name in self._victims:
                ctx.sup.kill(name, signal.SIGCONT)
        return held, probe  # the check below reports the empty hand

    def heal(self, ctx: ChaosContext) -> None:
        if self.all_workers and self._probe is not None:
            self._probe.started = time.monotonic()
            self._probe.start()
        faults.resume(ctx.sup, *self._victims)

    def cleanup(self, ctx: ChaosContext) -> None:
        super().cleanup(ctx)
        faults.resume(ctx.sup, *self._victims)


class WorkerCrashHook(Takeover):
    """A worker started with a crash hook dies at its first batch; the live workers take over."""

    # Sorts before worker-1: the lowest live consumer name is the primary that always reads, so this
    # worker gets entries (and crashes) at once.
    service = "worker-0-crash"
    taken_over, clock = "live workers took over the crashed worker's entries", "from the crash"

    def __init__(self, key: str, *, after_commit: bool) -> None:
        self.key, self.after_commit = key, after_commit
        where = "after COMMIT, before XACK" if after_commit else "after the INSERT, before COMMIT"
        self.name = "worker-crash-after-commit" if after_commit else "worker-crash-before-commit"
        self.title = f"Worker crash {where}"
        self.fault = f"an extra worker with the crash hook exits like SIGKILL {where} of its first batch"
        self._extra: Supervisor | None = None

    def inject(self, ctx: ChaosContext) -> None:
        env = {CRASH_AFTER_COMMIT_ENV if self.after_commit else CRASH_BEFORE_COMMIT_ENV: "1"}
        self.consumer = names.node_member(ctx.settings.node_name, self.service)
        args = ["worker", "--name", self.consumer]
        spec = ChildSpec(self.service, names.Role.WORKER, args, env=env, restart=False)
        self._extra = Supervisor(ctx.settings, [spec], out=ctx.log_out)
        self._extra.start()
        child = self._extra.children[self.service]
        code = child.proc.returncode if child.wait(30) and child.proc else None
        crashed_at = time.monotonic()
        ctx.mark(f"{self.service} exited with {code}")
        ctx.check("the crash hook fired", code == CRASH_EXIT_CODE, f"exit code {code}")
        probe = TakeoverProbe(ctx.settings, [self.consumer], started=crashed_at)
        self._held(ctx, probe, "the crashed worker left entries pending")
        if self.after_commit:
            committed = checks.rows_for(ctx.settings, self._pending_keys(ctx, probe))
            with_row = sum(1 for n in committed.values() if n == 1)
            ctx.check("its batch was committed before the crash", 0 < with_row == len(committed),
                      f"{with_row}/{len(committed)} of its pending scans have a row")  # fmt: skip
        probe.start()

    def _pending_keys(self, ctx: ChaosContext, probe: TakeoverProbe) -> set[tuple[str, str]]:
        with redis_adapter.client(ctx.settings) as client:
            entries: Any = [client.xrange(s, min=i, max=i) for s, i in probe.held.get(self.consumer, set())]
        scans = [named_fields(fields) for found in entries for _id, fields in found]
        return {(scan["dev"], scan["sid"]) for scan in scans}

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        super().after_drain(ctx, ledger)
        # Its committed batch came again to a live worker: the UNIQUE key's turn.
        if self._probe is not None and self.after_commit:
            n = absorbed(ctx, self)
            ctx.check("the redelivered batch met the UNIQUE key (workers absorbed duplicates)", n > 0,
                      f"{n} duplicates absorbed")  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._extra is not None:
            self._extra.stop()
        super().cleanup(ctx)


class Duplicates(Scenario):
    key = "8"
    name = "duplicates"
    title = "Duplicates: client resends 5x, processor group rewound, markers deleted + rewound"
    fault = ("20 acknowledged scans resent 5x each; processor stopped and its group rewound to where this "
             "scenario's load began; then dedup markers deleted and the group rewound again")  # fmt: skip
    resent_scans = 20
    resends = 5
    _republished = 0  # stored scans the markerless re-read published again
    _start: dict[int, int] | None = None  # the topic's end offsets before the load

    def before_load(self, ctx: ChaosContext) -> None:
        # Not to the log start: earlier runs' history could not be re-read within the drain timeout.
        self._start = faults.end_offsets(ctx.settings)

    def inject(self, ctx: ChaosContext) -> None:
        scans = ctx.load.acknowledged_scans(self.resent_scans)
        ok = ctx.post([scan for scan in scans for _ in range(self.resends)])
        self._resent = scans
        ctx.check("every resend was acknowledged", ok == len(scans) * self.resends and len(scans) > 0,
                  f"{ok}/{len(scans) * self.resends} resends got a 2xx")  # fmt: skip
        self._rewind(ctx, delete_markers=False)
        self._rewind(ctx, delete_markers=True)

    def _rewind(self, ctx: ChaosContext, *, delete_markers: bool) -> None:
        """Stop the processor, (delete the markers,) rewind its group, restart it and let it catch up;
        the evidence: how many scans stored before the rewind the re-read published *again*."""
        # The whole group must be empty for the broker to rewind it.
        for name in ctx.sup.names(names.Role.PROCESSOR):
            faults.stop_child(ctx.sup, name)
        stored = {k for k, n in checks.rows_for(ctx.settings, ctx.load.acknowledged()).items() if n == 1}
        tails = checks.stream_tails(ctx.settings)
        deleted = faults.delete_markers(ctx.settings) if delete_markers else 0
        backlog = faults.rewind_group(ctx.settings, to=self._start)
        faults.resume(ctx.sup, *ctx.sup.names(names.Role.PROCESSOR))
        what = f"deleted {deleted} dedup markers and rewound" if delete_markers else "rewound"
        ctx.mark(f"{what} the processor group: {backlog} records to re-read")
        # Let the re-read finish before the next step, so each protection is exercised on its own.
        took = checks.wait_caught_up(
            ctx.settings, max_lag=int(ctx.params.rate), timeout=ctx.params.drain_timeout_s
        )
        again = checks.published_since(ctx.settings, tails) & stored
        ctx.note(
            f"{what} the processor group to where the load began: {backlog} records re-read in "
            f"{took:.1f} s; {len(again)} of {len(stored)} already stored scans published again"
        )
        if delete_markers:
            self._republished = len(again)
            ctx.check("without markers, stored scans were published again (the UNIQUE index's turn)",
                      bool(stored) and len(again) == len(stored), f"{len(again)}/{len(stored)}")  # fmt: skip
        else:
            ctx.check("the dedup markers absorbed the re-read", bool(stored) and backlog > 0 and not again,
                      f"{len(again)} of {len(stored)} stored scans published again")  # fmt: skip

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        # The rows alone cannot show the UNIQUE key at work (it makes a second row impossible): the
        # workers' own count of absorbed duplicates must cover every scan published again.
        n = absorbed(ctx, self)
        ctx.check("the workers absorbed every scan published again", n >= self._republished > 0,
                  f"{n} duplicates absorbed, {self._republished} scans published again")  # fmt: skip
        rows = checks.rows_for(ctx.settings, {(s.device_id, s.scan_id) for s in self._resent})
        ctx.check("each resent scan has exactly one row", bool(rows) and all(n == 1 for n in rows.values()),
                  f"{sum(rows.values())} rows for {len(rows)} scans sent {self.resends}x each")  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        faults.resume(ctx.sup, *ctx.sup.names(names.Role.PROCESSOR))


class Poison(Scenario):
    key = "9"
    name = "poison"
    title = "Poison: undecodable and schema-violating records on the topic; an unknown device"
    fault = ("3 raw records written straight to the topic (undecodable bytes, schema-violating JSON, empty "
             "value) -> DLT; 20 scans of an unmapped device via ingest -> DLQ, "
             "replayed after mapping it")  # fmt: skip
    expects_dead_letters = True
    unknown_scans = 20
    device = ""  # the unmapped device, once injected

    def inject(self, ctx: ChaosContext) -> None:
        self.token = secrets.token_hex(6)
        self.device = f"CHAOS-UNMAPPED-{self.token}"
        bad_json = {"barcode": "has space", "deviceId": "SEOUL-CENTER-PC-001", "scanTime": "yesterday",
                    "scanId": f"poison-{self.token}"}  # fmt: skip
        self.poison_keys = [f"poison-{self.token}-{i}".encode() for i in range(3)]
        values = [b"\xff\xfe\x00not json " + self.token.encode(), orjson.dumps(bad_json), None]
        faults.produce_raw(ctx.settings, list(zip(self.poison_keys, values, strict=True)))
        now = int(time.time() * 1000)
        self.unknown = [
            ScanEvent(f"880{i:010d}", self.device, now + i, f"chaos-{self.token}-{i}")
            for i in range(self.unknown_scans)
        ]
        accepted = ctx.post(self.unknown)
        ctx.extra_sent += len(self.poison_keys)
        ctx.check("ingest accepted the unknown device's scans (it does not know the mapping)",
                  accepted == len(self.unknown), f"{accepted}/{len(self.unknown)}")  # fmt: skip

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        in_dlt = [x for x in dlt.read_dlt(ctx.settings, since_ms=ctx.started_ms) if x.key in self.poison_keys]
        reasoned = all(x.reason and "no reason" not in x.reason for x in in_dlt)
        ok = {x.key for x in in_dlt} == set(self.poison_keys) and reasoned
        found = "; ".join(f"{(x.key or b'').decode()}: {x.reason[:60]}" for x in in_dlt)
        ctx.check("every poison record is in barcode-events.dlt with its reason", ok, found or "none found")
        letters = self._letters(ctx)
        ok = len({x.scan_id for x in letters}) == len(self.unknown)
        ctx.check("every unknown-device scan is in barcode:dlq with its reason",
                  ok and all(x.cause is Cause.UNKNOWN_DEVICE for x in letters),
                  f"{len(letters)} entries; reason: {letters[0].reason if letters else '-'}")  # fmt: skip
        ids = [x.id for x in letters]
        refused = dlq.replay_dlq(ctx.settings, ids=ids)
        ctx.check("dlq replay refuses while the device is still unmapped",
                  not refused.replayed and len(refused.skipped) == len(ids),
                  refused.skipped[0][1] if refused.skipped else "nothing skipped")  # fmt: skip
        checks.query(ctx.settings, "INSERT INTO device_center_mapping (device_id, center_id, center_name)"
                     " VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE center_id = VALUES(center_id)",
                     self.device, "CENTER-CHAOS", "Chaos test center")  # fmt: skip
        outcome = dlq.replay_dlq(ctx.settings, ids=ids)
        wait_drained(ctx.settings, timeout=ctx.params.drain_timeout_s)
        rows = checks.rows_for(ctx.settings, {(s.device_id, s.scan_id) for s in self.unknown})
        left = self._letters(ctx)
        ctx.check("after mapping the device, dlq replay stored each of its scans exactly once",
                  len(outcome.replayed) == len(ids) and all(n == 1 for n in rows.values()) and not left,
                  f"replayed {len(outcome.replayed)}, rows {sum(rows.values())} for {len(rows)} scans, "
                  f"{len(left)} left in the DLQ")  # fmt: skip
        ctx.note(f"{len(in_dlt)} poison records in the DLT; {len(letters)} unknown-device scans in the DLQ, "
                 f"replayed after mapping {self.device}: {sum(rows.values())} rows")  # fmt: skip

    def _letters(self, ctx: ChaosContext) -> list[DeadLetter]:
        """The unknown device's scans in the DLQ."""
        letters = dlq.list_dlq(ctx.settings, since_ms=ctx.started_ms, limit=None)
        return [x for x in letters if x.device_id == self.device]

    def cleanup(self, ctx: ChaosContext) -> None:
        if self.device:
            checks.query(ctx.settings, "DELETE FROM device_center_mapping WHERE device_id = %s", self.device)


class RedisFlush(Scenario):
    key = "10"
    name = "redis-flush"
    title = "Redis data lost (FLUSHALL) with scans in flight; re-driven with `replay --since`"
    fault = ("FLUSHALL while scans are in flight (streams, pending lists, groups, markers gone); "
             "heal = `barcode-pipeline replay --since <load start>`")  # fmt: skip

    def inject(self, ctx: ChaosContext) -> None:
        keys = faults.flush_redis(ctx.settings)
        ctx.mark(f"FLUSHALL ({keys} keys)")
        ctx.note(f"FLUSHALL dropped {keys} keys while scans were in flight")

    def heal(self, ctx: ChaosContext) -> None:
        since = ctx.started_ms - 1000
        result = faults.run_cli(ctx.settings, ["replay", "--since", str(since)])
        out = (result.stdout.strip().splitlines() or [""])[-1]
        ctx.mark(f"replay --since {since}: rc {result.returncode}: {out}")
        ctx.check("`barcode-pipeline replay --since` succeeded", result.returncode == 0,
                  out or result.stderr.strip()[-300:])  # fmt: skip
        ctx.note(f"`barcode-pipeline replay --since {since}`: {out}")


class RedisFull(Scenario):
    """Redis at its ``maxmemory`` (noeviction) under load. Before the fix the processor crash-looped
    on OOM, stored entries were dead-lettered and refused heartbeats caused takeovers."""

    key = "12"
    name = "redis-full"
    title = "Redis full (maxmemory reached, noeviction) under load, then memory freed"
    fault = (
        "CONFIG SET maxmemory 1mb: every write that needs memory is refused; heal = the old maxmemory back"
    )

    _old: str | None = None  # the maxmemory to restore

    def inject(self, ctx: ChaosContext) -> None:
        self._old = faults.set_maxmemory(ctx.settings)
        self._restarts = {name: child.restarts for name, child in ctx.sup.children.items()}
        ctx.mark(f"maxmemory {faults.FULL_MAXMEMORY} (was {self._old}): Redis full")

    def hold(self, ctx: ChaosContext) -> None:
        ctx.sleep(max(0.0, ctx.params.hold_s / 2 - ctx.since_inject()))
        result = faults.run_cli(ctx.settings, ["status"])
        full = result.returncode == 1 and "Redis is FULL" in result.stderr
        ctx.check("`status` says Redis is full (and exits 1)", full, result.stderr.strip()[-300:])
        states = self._verdicts(ctx)
        ctx.check("the processor's liveness shows it waiting on a dependency",
                  set(states.values()) == {"waiting"}, str(states))  # fmt: skip
        super().hold(ctx)
        with redis_adapter.client(ctx.settings) as client:
            alive = set(live_workers(client))
        workers = {names.node_member(ctx.settings.node_name, w) for w in ctx.sup.names(names.Role.WORKER)}
        ctx.check("every worker's heartbeat stayed live while Redis was full (no takeover)",
                  workers <= alive, f"live: {sorted(alive)}, workers: {sorted(workers)}")  # fmt: skip

    @staticmethod
    def _verdicts(ctx: ChaosContext) -> dict[str, object]:
        """The watchdog's verdict per processor once it looked since the fault (held longer for it)."""
        interval = float((read_state(ctx.settings) or {}).get("interval_s", 5.0))
        deadline = max(ctx.params.hold_s, 2 * interval + 2.0)
        while True:
            verdicts = (read_state(ctx.settings) or {}).get("services", {})
            states = {n: verdicts.get(n, {}).get("state") for n in ctx.sup.names(names.Role.PROCESSOR)}
            if set(states.values()) == {"waiting"} or ctx.since_inject() >= deadline:
                return states
            ctx.sleep(0.5)

    def heal(self, ctx: ChaosContext) -> None:
        self.cleanup(ctx)
        restarted = {n: c.restarts - self._restarts.get(n, 0) for n, c in ctx.sup.children.items()}
        ctx.check("no process restarted while Redis was full (no crash loop)",
                  not any(restarted.values()), str(restarted))  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._old is not None:
            faults.set_maxmemory(ctx.settings, self._old)
            ctx.mark(f"maxmemory {self._old} again")
            self._old = None


class Combined(Scheduled):
    """The field report's faults in one window, each healed as an operator would: one fault at a time
    cannot show a component recovering *into* the next (a processor restarting while Redis is down)."""

    key = "11"
    name = "combined"
    title = "Combined: processor, worker-1, Redis and Kafka SIGKILLed in turn within one hold"
    fault = ("SIGKILL of the processor (supervisor restarts it), then of worker-1 while it holds entries "
             "(restarted too), then of Redis followed by `stack up`, "
             "then of Kafka followed by `stack up`")  # fmt: skip
    # Kafka right after Redis is back, as in the field report.
    schedule = ((0.0, "processor"), (0.15, "worker"), (0.3, "redis"), (0.375, "kafka"))

    def cleanup(self, ctx: ChaosContext) -> None:
        ctx.stack.up(quiet=True)
        faults.resume(ctx.sup, *ctx.sup.children)


# Factories, not instances: a scenario keeps state while it runs, so every run gets a fresh one.
FACTORIES: tuple[Callable[[], Scenario], ...] = (
    lambda: ServerKill("1", "kafka"),
    ProcessorKill,
    lambda: ServerKill("3", "redis"),
    RedisLostTail,
    lambda: WorkerKill("4", all_workers=False),
    lambda: WorkerKill("5", all_workers=True),
    lambda: WorkerCrashHook("6", after_commit=True),
    lambda: WorkerCrashHook("6b", after_commit=False),
    lambda: ServerKill("7", "mariadb"),
    lambda: ServerKill("7b", "mariadb", clean_stop=True),
    Duplicates,
    Poison,
    RedisFlush,
    RedisFull,
    Combined,
)


def select(
    wanted: Sequence[str], factories: Sequence[Callable[[], Scenario]] = FACTORIES, what: str = "scenario",
    *, as_asked: bool = False,
) -> list[Scenario]:  # fmt: skip
    """Fresh scenarios by name or key, in registry order (or ``as_asked``); ``all`` or none: every one."""
    every = [f() for f in factories]
    if not wanted or "all" in wanted:
        return every
    by = {s.name: s for s in every} | {s.key: s for s in every}
    if unknown := [w for w in wanted if w not in by]:
        choices = ", ".join(s.name for s in every)
        raise ConfigError(f"unknown {what}(s): {', '.join(unknown)}; choose from: all, {choices}")
    chosen = [by[w] for w in dict.fromkeys(wanted)]
    return chosen if as_asked else [s for s in every if s in chosen]
