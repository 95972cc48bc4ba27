"""What a client sees while a fault is held: one request at a time, its status and its headers.

The background load resends whatever fails, so it cannot tell a clean 503 from a 500 or a hang.
This probe can: the Kafka kill must be answered with 503 and ``Retry-After``, promptly, and
never with a 500 or no answer at all.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from barcode_harness.chaos.load import ScanKey
from barcode_harness.scanner.scans import SEEDED_DEVICES, encode_scan
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.domain import ScanEvent

log = logging.getLogger(__name__)


@dataclass
class ProbeAnswers:
    """Tallies of the answers: ``statuses`` counts HTTP statuses, 0 meaning no answer in time."""

    statuses: Counter[int] = field(default_factory=Counter)
    unavailable_without_retry_after: int = 0
    slowest_s: float = 0.0
    acknowledged: set[ScanKey] = field(default_factory=set)  # 2xx: the ledger must find these

    def summary(self) -> str:
        shown = ", ".join(f"{'no answer' if s == 0 else s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{shown or 'no request'}; slowest {self.slowest_s:.1f} s"


class IngestProbe:
    """POSTs one fresh scan every ``interval_s`` on a thread until stopped; answers are tallied."""

    def __init__(
        self, base_url: str, *, api_key: str = "", interval_s: float = 0.5, timeout_s: float = 10.0
    ) -> None:
        self.url = base_url.rstrip("/") + names.ROUTE_SCAN
        self.headers = {"Content-Type": "application/json", **client_headers(api_key)}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.answers = ProbeAnswers()
        self._token = secrets.token_hex(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> ProbeAnswers:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)
        return self.answers

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            scan = ScanEvent(f"990{i:010d}", SEEDED_DEVICES[0], int(time.time() * 1000),
                             f"probe-{self._token}-{i}")  # fmt: skip
            self._one(scan)
            self._stop.wait(self.interval_s)

    def _one(self, scan: ScanEvent) -> None:
        req = urllib.request.Request(self.url, data=encode_scan(scan), method="POST", headers=self.headers)
        started = time.monotonic()
        status, retry_after = 0, None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # loopback URL we built
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status, retry_after = int(exc.code), exc.headers.get("Retry-After")
        except (urllib.error.URLError, OSError) as exc:
            log.warning("ingest probe: no answer (%s)", exc)
        a = self.answers
        a.slowest_s = max(a.slowest_s, time.monotonic() - started)
        a.statuses[status] += 1
        if status == 503 and not retry_after:
            a.unavailable_without_retry_after += 1
        if 200 <= status < 300:
            a.acknowledged.add((scan.device_id, scan.scan_id))
