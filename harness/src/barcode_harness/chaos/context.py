"""What a scenario gets to work with: settings, the stack, the supervised pipeline, the client load."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from barcode_harness.chaos import faults
from barcode_harness.chaos.checks import Check
from barcode_harness.chaos.load import ScanKey, ScannerLoad
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.manager import StackManager
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.run.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosParams:
    """Scale of a run. Defaults are the documented run; CI passes shorter holds."""

    rate: float = 200.0  # scans/s from the clients, steady, for the whole scenario until heal
    warmup_s: float = 5.0  # steady load before the fault
    hold_s: float = 20.0  # how long the fault is kept
    drain_timeout_s: float = 120.0  # give up waiting for the drain after this (a failure)
    drain_target_s: float = 30.0  # heal -> fully drained, the promise
    takeover_target_s: float = 10.0  # a dead worker's pending entries must leave it within this
    duplicate_ratio: float = 0.05  # share of client resends in the background load


@dataclass
class ChaosContext:
    """State of one scenario run; scenarios record facts in ``metrics``, ``notes`` and ``checks``."""

    settings: HarnessSettings
    stack: StackManager
    sup: Supervisor
    params: ChaosParams
    load: ScannerLoad
    workdir: Path
    log_out: IO[str]
    started_ms: int = 0  # wall clock (epoch ms) when the load started; dead letters are searched from here
    t_inject: float = 0.0  # monotonic
    t_heal: float = 0.0  # monotonic
    extra_acked: set[ScanKey] = field(default_factory=set)  # scans the scenario itself got a 2xx for
    extra_sent: int = 0  # requests or records the scenario sent besides the load
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))
        if not ok:
            log.error("check failed: %s (%s)", name, detail)

    def post(self, scans: list[ScanEvent]) -> int:
        """POST each scan as a client would, counted as sent; those answered 2xx count as acknowledged."""
        acked = [scan for scan in scans if 200 <= faults.post_scan(self.settings, scan) < 300]
        self.extra_sent += len(scans)
        self.extra_acked.update((scan.device_id, scan.scan_id) for scan in acked)
        return len(acked)

    def note(self, text: str) -> None:
        log.info("%s", text)
        self.notes.append(text)

    def mark(self, text: str) -> None:
        """A line in the pipeline log, so the services' output can be read against the timeline."""
        self.log_out.write(f"[chaos] {time.strftime('%H:%M:%S')} {text}\n")
        self.log_out.flush()
        log.info("%s", text)

    def sleep(self, seconds: float) -> None:
        """Wait while the load keeps running; fail fast if the client itself died."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not self.load.running:
                raise PipelineError("the client load stopped on its own (see the log)", component="chaos")
            time.sleep(min(0.2, left))

    def since_inject(self) -> float:
        return time.monotonic() - self.t_inject

    def logged_since(self, mark: str, pattern: re.Pattern[str]) -> int:
        """The sum of ``pattern``'s first group in the pipeline log after ``mark`` (the services' count)."""
        try:
            text = (self.workdir.parent / "pipeline.log").read_text(errors="replace")
        except OSError:  # no log (a workdir of its own): nothing counted, not a failed scenario
            return 0
        tail = text[text.rfind(mark) :] if mark in text else ""
        return sum(int(m.group(1)) for m in pattern.finditer(tail))
