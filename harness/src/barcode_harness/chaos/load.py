"""Steady client load for a fault-injection run: the scanner simulator with its durable outbox.

The simulator is the honest client for this job: a scan counts as *acknowledged* only when its
outbox row was marked acked after a 2xx, and every non-2xx or network error is retried with
back-off. So "acknowledged" below means exactly what a center PC would believe was delivered.

It runs in two phases: a background thread generates scans at a steady rate while the fault is
injected and healed; then a second, foreground run on the same outbox only delivers what is still
pending (the simulator's ``count=0`` mode) and returns once nothing is left.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from barcode_harness.scanner.outbox import OutboxCounts, outbox_status
from barcode_harness.scanner.scans import SEEDED_DEVICES
from barcode_harness.scanner.simulator import Simulator, SimulatorConfig, SimulatorReport
from barcode_pipeline.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

ScanKey = tuple[str, str]  # (device_id, scan_id): what identifies one scan event end to end


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """Client behaviour during a scenario (the scanners' side of the contract)."""

    rate: float = 200.0  # scans/s over all devices
    devices: tuple[str, ...] = SEEDED_DEVICES
    duplicate_ratio: float = 0.05  # share of scans resent by the client as a new request
    concurrency: int = 8  # requests in flight per device
    backoff_base_s: float = 0.1
    # Capped low so a healed fault is noticed within seconds; a real scanner fleet would use more.
    backoff_cap_s: float = 2.0
    request_timeout_s: float = 10.0
    # A backlog left by an outage is resent in batches of up to this many, as a scanner with an
    # outbox would catch up; one scan per request would make the drain measure the client.
    catch_up_batch: int = 100
    api_key: str = ""  # the run's harness key (see barcode_harness.keys)


class ScannerLoad:
    """One scenario's client: generate in a thread, then drain the outbox in the foreground."""

    def __init__(self, url: str, outbox_path: Path, config: LoadConfig) -> None:
        self.url = url
        self.outbox_path = outbox_path
        self.config = config
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._report: SimulatorReport | None = None
        self._error: BaseException | None = None

    def _sim_config(self, *, count: int | None, drain_timeout_s: float | None) -> SimulatorConfig:
        c = self.config
        return SimulatorConfig(
            url=self.url,
            outbox_path=self.outbox_path,
            devices=c.devices,
            rate_per_device=c.rate / len(c.devices),
            count=count,
            duplicate_ratio=c.duplicate_ratio,
            concurrency=c.concurrency,
            catch_up_batch=c.catch_up_batch,
            request_timeout_s=c.request_timeout_s,
            backoff_base_s=c.backoff_base_s,
            backoff_cap_s=c.backoff_cap_s,
            drain_timeout_s=drain_timeout_s,
            synchronous="NORMAL",  # the outbox's own fsync is not what is under test here
            api_key=c.api_key,
        )

    # ------------------------------------------------------------------ phase 1: steady load
    def start(self) -> None:
        """Start generating ``rate`` scans/s until :meth:`stop_generating`."""
        self._thread = threading.Thread(target=self._run_thread, name="chaos-scanner", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise PipelineError("scanner simulator did not start", component="chaos")

    def _run_thread(self) -> None:
        async def main() -> SimulatorReport:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            sim = Simulator(self._sim_config(count=None, drain_timeout_s=None))
            return await sim.run(self._stop)

        try:
            self._report = asyncio.run(main())
        except BaseException as exc:  # surfaced by stop_generating
            self._error = exc
            self._ready.set()

    def stop_generating(self, timeout: float = 60.0) -> SimulatorReport:
        """Stop generating; scans not yet acknowledged stay pending in the outbox."""
        if self._thread is None:
            raise PipelineError("load was never started", component="chaos")
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise PipelineError("scanner simulator did not stop", component="chaos")
        if self._error is not None:
            raise PipelineError(f"scanner simulator failed: {self._error!r}", component="chaos")
        assert self._report is not None
        return self._report

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ phase 2: deliver what is pending
    def drain(self, timeout_s: float) -> SimulatorReport:
        """Deliver every pending scan (retrying as a scanner would); ``drained`` says if it finished."""
        sim = Simulator(self._sim_config(count=0, drain_timeout_s=timeout_s))
        return asyncio.run(sim.run())

    # ------------------------------------------------------------------ what the clients know
    def counts(self) -> OutboxCounts:
        return outbox_status(self.outbox_path)

    def acknowledged(self, *, before_ms: int | None = None) -> set[ScanKey]:
        """Distinct scans the ingest API answered 2xx for (optionally: acked before ``before_ms``)."""
        conn = sqlite3.connect(self.outbox_path, timeout=10.0)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            sql = "SELECT DISTINCT device_id, scan_id FROM outbox WHERE state = 1"
            params: tuple[int, ...] = ()
            if before_ms is not None:
                sql += " AND done_ms < ?"
                params = (before_ms,)
            return {(str(d), str(s)) for d, s in conn.execute(sql, params)}
        finally:
            conn.close()

    def generated(self) -> set[ScanKey]:
        """Every distinct scan the clients made, whatever became of it (answered or not)."""
        conn = sqlite3.connect(self.outbox_path, timeout=10.0)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            return {
                (str(d), str(s)) for d, s in conn.execute("SELECT DISTINCT device_id, scan_id FROM outbox")
            }
        finally:
            conn.close()

    def wait_acknowledged(self, minimum: int, timeout: float) -> int:
        """Block until the clients hold at least ``minimum`` acknowledgements (load is flowing)."""
        deadline = time.monotonic() + timeout
        acked = 0
        while time.monotonic() < deadline:
            try:
                acked = self.counts().acked
            except (ConfigError, sqlite3.OperationalError):  # no file (or schema) yet
                acked = 0
            if acked >= minimum:
                return acked
            time.sleep(0.2)
        raise PipelineError(
            f"load not flowing: {acked} scans acknowledged after {timeout:.0f}s (wanted {minimum})",
            component="chaos",
        )
