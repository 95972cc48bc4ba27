"""``bench isolation``: both paths under the same scan load while the database is saturated with locks.

Lockers loop over a transaction that takes ``SELECT ... ORDER BY id DESC LIMIT n FOR UPDATE`` on the
newest rows of both tables and holds them ``hold_s``: under REPEATABLE READ that next-key-locks the end
of each primary key, so every INSERT waits (a long back-office transaction on an OLTP table). Legacy
requests, which insert before answering, should pile up; async ingest needs only Kafka and stays flat.
The load runs as three back-to-back windows per path (baseline, contention, recovery), each in its own
process started on schedule: a continuous arrival rate, with exact HDR percentiles per window.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pymysql

from barcode_harness.bench import report
from barcode_harness.bench.env import ASYNC, LEGACY, PATHS, TABLES, BacklogSampler, BenchRun
from barcode_harness.bench.histogram import LatencyHistogram
from barcode_harness.bench.isolation_render import markdown, write_charts
from barcode_harness.bench.loadgen import LoadResult
from barcode_harness.bench.loads import ParallelLoads, acked_ids, series, summary_dict
from barcode_harness.bench.specs import IsolationSpec
from barcode_pipeline.adapters import db
from barcode_pipeline.ops.verify import Verification, verify_scan_ids

log = logging.getLogger(__name__)
say = report.progress_logger(__name__)

WINDOWS = ("baseline", "contention", "recovery")
LOCKER_COUNTS = ("transactions", "lock_waits_timed_out", "deadlocks", "errors")
LOCK_ERRORS = {1205: "lock_waits_timed_out", 1213: "deadlocks"}  # MySQL error codes


@dataclass
class LockContention:
    """Threads that keep the newest rows of the tables locked (see the module docstring)."""

    db_url: str
    tables: tuple[str, ...]
    threads: int
    hold_s: float
    rows: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOCKER_COUNTS, 0))
    stop: threading.Event = field(default_factory=threading.Event)  # set: commit now (holders wake at once)
    _lockers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._lockers = [
            threading.Thread(target=self._run, name="locker", daemon=True) for _ in range(self.threads)
        ]
        for t in self._lockers:
            t.start()

    def join(self) -> None:
        for t in self._lockers:
            t.join(60)

    def _lock(self, conn: Any) -> None:
        with conn.cursor() as cur:
            for table in self.tables:
                cur.execute(f"SELECT id FROM {table} ORDER BY id DESC LIMIT %s FOR UPDATE", (self.rows,))
                if ids := [row[0] for row in cur.fetchall()]:
                    marks = ",".join(["%s"] * len(ids))
                    cur.execute(
                        f"UPDATE {table} SET processed_time = processed_time WHERE id IN ({marks})", ids
                    )
            self.stop.wait(self.hold_s)
        conn.commit()

    def _run(self) -> None:
        conn: Any = None
        while not self.stop.is_set():
            try:
                conn = conn or db.connect(self.db_url, autocommit=False)
                self._lock(conn)
                self.counts["transactions"] += 1
            except pymysql.err.MySQLError as exc:
                # a lock wait timeout or a deadlock with another locker or a writer is expected: retry
                kind = LOCK_ERRORS.get(exc.args[0] if exc.args else 0, "errors")
                self.counts[kind] += 1
                if kind == "errors":
                    log.warning("locker: %s", exc)
                try:
                    if conn is not None:
                        conn.rollback()
                except pymysql.err.MySQLError:
                    conn = None
        with contextlib.suppress(pymysql.err.MySQLError):
            if conn is not None:
                conn.commit()
                conn.close()

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "tables": list(self.tables),
            "hold_s": self.hold_s,
            "rows_locked_per_table": self.rows,
            **self.counts,
        }


def with_timeouts(result: LoadResult) -> dict[str, Any]:
    """Latency with each unanswered request counted at the client timeout (a lower bound): else a path
    whose requests time out would look *faster*, as only answers have latencies."""
    hist = LatencyHistogram.decode(result.latency_hdr) if result.latency_hdr else LatencyHistogram()
    if result.failures:
        hist.record_us(int(result.spec.timeout_s * 1_000_000), result.failures)
    return hist.summary().to_dict()


def run_isolation(spec: IsolationSpec, run: BenchRun) -> dict[str, Any]:
    settings = run.settings
    durations = spec.durations()
    with run.started(spec, drain_s=spec.drain_timeout_s) as (env, env_info):
        env.warm_up(PATHS, spec.warmup_s, spec.drain_timeout_s, rate=spec.rate, concurrency=spec.concurrency)
        tables = (TABLES[LEGACY], TABLES[ASYNC])
        contention = LockContention(settings.db.url, tables, spec.lockers, spec.hold_s, spec.lock_rows)
        futures: dict[tuple[str, str], Future[LoadResult]] = {}
        marks: dict[str, float] = {}
        with BacklogSampler(settings, 1.0) as backlog, ParallelLoads(len(WINDOWS) * len(PATHS)) as pool:
            t0 = time.time() + 0.5
            for window in WINDOWS:
                time.sleep(max(0.0, t0 - time.time()))
                if window == "contention":
                    say(f"contention on: {spec.lockers} threads locking the newest rows of both tables")
                    contention.start()
                elif window == "recovery":
                    contention.stop.set()
                    say("contention off")
                marks[window] = time.time()
                for path in PATHS:
                    futures[(window, path)] = pool.submit(env.spec(
                        path, rate=spec.rate, duration_s=durations[window], concurrency=spec.concurrency,
                        acked=run.acked(f"{window}-{path}"), processes=1, timeout_s=spec.timeout_s,
                    ))  # fmt: skip
                say(f"{window}: {durations[window]:g}s at {spec.rate:g} scans/s on each path")
                t0 += durations[window]
            results = {key: fut.result() for key, fut in futures.items()}
            contention.join()
            load_end = time.time()
            say("load over; waiting for the pipeline to drain")
            drain_s = env.drain(spec.drain_timeout_s)
            drained = {"drained_s_after_load_end": round(time.time() - load_end, 1),
                       "drain_wait_s": round(drain_s, 1)}  # fmt: skip
            time.sleep(1.0)  # one more backlog sample at zero for the chart
    acked = {path: [i for w in WINDOWS for i in acked_ids(results[(w, path)])] for path in PATHS}
    checks = {path: verify_scan_ids(settings.db.url, acked[path], table=TABLES[path]) for path in PATHS}
    result = summarise(spec, env_info, results, marks, backlog, contention, checks, drained)
    return run.write("isolation", result, markdown, write_charts)


def summarise(spec: IsolationSpec, env_info: dict[str, Any], results: dict[tuple[str, str], LoadResult],
              marks: dict[str, float], backlog: BacklogSampler, contention: LockContention,
              checks: dict[str, Verification], drained: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    windows: dict[str, dict[str, Any]] = {w: {} for w in WINDOWS}
    for (window, path), res in results.items():
        extra = {"latency_incl_timeouts_ms": with_timeouts(res), "failures": res.failures}
        windows[window][path] = {**summary_dict(res), **extra}
    c_start, c_end = marks["contention"], marks["recovery"]
    base = [b.in_flight for t, b in backlog.window(marks["baseline"], c_start)]
    during = [b.in_flight for t, b in backlog.window(c_start, c_end)]
    baseline_level = max([*base, int(spec.rate)])  # a second's worth of scans in flight is normal
    back_at = next((t for t, b in backlog.samples if t > c_end and b.in_flight <= baseline_level), None)
    series_t0 = marks["baseline"]
    result: dict[str, Any] = {
        "command": "isolation",
        "environment": env_info,
        "windows": windows,
        "contention": {
            **contention.to_dict(),
            "start_s": round(c_start - series_t0, 2),
            "end_s": round(c_end - series_t0, 2),
        },
        "backlog": {
            "series": backlog.series(series_t0),
            "baseline_max_in_flight": max(base, default=0),
            "peak_in_flight_during_contention": max(during, default=0),
            "peak_in_flight": max((b.in_flight for _, b in backlog.samples), default=0),
            "back_to_baseline_s_after_contention": round(back_at - c_end, 1) if back_at else None,
            "baseline_level_used": baseline_level,
            **drained,
        },
        "latency_series": {p: _joined_series([results[(w, p)] for w in WINDOWS], series_t0) for p in PATHS},
        "verification": {path: checks[path].to_dict() for path in PATHS},
    }
    result["targets"] = [t.to_dict() for t in targets(result)]
    return result


def _joined_series(parts: list[LoadResult], t0: float) -> dict[str, list[float]]:
    each = [series(res, t0) for res in parts]
    return {key: [v for one in each for v in one[key]] for key in each[0]}


def targets(result: dict[str, Any]) -> list[report.Target]:
    c = result["windows"]["contention"]
    # the larger of the two readings: a timed-out request waited at least the timeout
    legacy99, async99 = (
        max(c[p]["latency_incl_timeouts_ms"]["p99_ms"], c[p]["latency_ms"]["p99_ms"]) for p in PATHS
    )
    base99 = result["windows"]["baseline"][ASYNC]["latency_ms"]["p99_ms"]
    b = result["backlog"]
    lost = sum(v["missing"] + v["duplicate_rows"] for v in result["verification"].values())
    return [
        report.check(
            "p99 legacy ÷ async under DB contention", report.ratio(legacy99, async99), ">=", 10, unit="×",
            fmt="{:.1f}",
            note=f"legacy {legacy99:.1f} ms, async {async99:.2f} ms (unanswered requests counted "
            "at the client timeout)",
        ),
        report.check(
            "async ingest p99 during contention ÷ baseline p99 (flat)", report.ratio(async99, base99),
            "<=", 2, unit="×", fmt="{:.2f}",
            note=f"baseline p99 {base99:.2f} ms; bound chosen here: 2× = flat",
        ),
        report.check("async errors during contention", float(c[ASYNC]["errors"]), "<=", 0, fmt="{:.0f}"),
        report.check(
            "backlog back to its baseline after the contention (s)",
            b["back_to_baseline_s_after_contention"], "<=", result["environment"]["spec"]["recovery_s"],
            unit=" s", fmt="{:.1f}", note="within the recovery window",
        ),
        report.check("acknowledged = stored, both paths (lost + duplicated)", float(lost), "<=", 0,
                     fmt="{:.0f}"),
    ]  # fmt: skip
