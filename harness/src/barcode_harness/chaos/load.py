"""Steady client load for a fault-injection run: the scanner simulator with its durable outbox. A scan
is *acknowledged* once its row was marked acked after a 2xx (what a center PC believes delivered)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

from barcode_harness.scanner.outbox import OutboxCounts, outbox_status
from barcode_harness.scanner.scans import SEEDED_DEVICES
from barcode_harness.scanner.simulator import Simulator, SimulatorConfig, SimulatorReport
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.errors import PipelineError

ScanKey = tuple[str, str]  # (device_id, scan_id): what identifies one scan event end to end


class ScannerLoad:
    """One scenario's client: generate in a thread, then drain the outbox in the foreground."""

    def __init__(
        self, url: str, outbox_path: Path, *, rate: float, duplicate_ratio: float, api_key: str
    ) -> None:
        self.config = SimulatorConfig(
            url=url,
            outbox_path=outbox_path,
            rate_per_device=rate / len(SEEDED_DEVICES),  # ``rate`` scans/s over all devices
            duplicate_ratio=duplicate_ratio,  # share of scans resent by the client as a new request
            concurrency=8,
            catch_up_batch=100,  # a backlog in batches, as scanners do (else the drain would time the client)
            backoff_base_s=0.1,
            backoff_cap_s=2.0,  # low, so a healed fault is noticed within seconds (a real fleet waits more)
            drain_timeout_s=None,
            synchronous="NORMAL",  # the outbox's own fsync is not what is under test here
            api_key=api_key,  # the run's harness key (see barcode_harness.keys)
        )
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)  # not this thread's loop
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-scanner", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start generating ``rate`` scans/s until :meth:`stop_generating`."""
        self._runner.get_loop()  # created here, so that stop_generating can never race its creation
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._runner:
                self._runner.run(Simulator(self.config).run(self._stop))
        except BaseException as exc:  # surfaced by stop_generating
            self._error = exc

    def stop_generating(self) -> None:
        """Stop generating; scans not yet acknowledged stay pending in the outbox."""
        if self._thread.is_alive():
            self._runner.get_loop().call_soon_threadsafe(self._stop.set)
        self._thread.join(60.0)
        if self._thread.is_alive():
            raise PipelineError("scanner simulator did not stop", component="chaos")
        if self._error is not None:
            raise PipelineError(f"scanner simulator failed: {self._error!r}", component="chaos")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def drain(self, timeout_s: float) -> SimulatorReport:
        """Deliver every pending scan (retrying as a scanner would); ``drained`` says if it finished."""
        return asyncio.run(Simulator(replace(self.config, count=0, drain_timeout_s=timeout_s)).run())

    def counts(self) -> OutboxCounts:
        return outbox_status(self.config.outbox_path)

    def _rows(self, sql: str, *args: int) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.config.outbox_path, timeout=10.0)) as conn:
            conn.execute("PRAGMA busy_timeout=10000")
            return conn.execute(sql, args).fetchall()

    def acknowledged(self, *, before_ms: int | None = None) -> set[ScanKey]:
        """Distinct scans the ingest API answered 2xx for (optionally: acked before ``before_ms``)."""
        sql = "SELECT DISTINCT device_id, scan_id FROM outbox WHERE state = 1"
        rows = self._rows(sql) if before_ms is None else self._rows(sql + " AND done_ms < ?", before_ms)
        return {(str(d), str(s)) for d, s in rows}

    def acknowledged_scans(self, limit: int) -> list[ScanEvent]:
        """Up to ``limit`` acknowledged scans, whole (to resend them)."""
        rows = self._rows("SELECT DISTINCT device_id, scan_id, barcode, scan_time FROM outbox"
                          " WHERE state = 1 LIMIT ?", limit)  # fmt: skip
        return [ScanEvent(str(b), str(d), int(t), str(s)) for d, s, b, t in rows]

    def generated(self) -> set[ScanKey]:
        """Every distinct scan the clients made, whatever became of it (answered or not)."""
        return {(str(d), str(s)) for d, s in self._rows("SELECT DISTINCT device_id, scan_id FROM outbox")}
