"""Fault and repair primitives, each doing one thing to one system as an operator (or a crash) would.
None checks anything (that is ``chaos.checks``); the ingest probe only tallies answers."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from itertools import islice
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition

from barcode_harness.chaos.checks import polled, wait_until
from barcode_harness.chaos.load import ScanKey
from barcode_harness.scanner.scans import SEEDED_DEVICES, encode_scan
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import settings_env
from barcode_pipeline.domain import ScanEvent
from barcode_pipeline.errors import DeliveryError, PipelineError
from barcode_pipeline.run.supervisor import Hold, Supervisor

log = logging.getLogger(__name__)


def resume(sup: Supervisor, *children: str, timeout: float = 30.0) -> None:
    """Make sure children run and are supervised again; returns once they are alive. Only a paused
    child is started here (a dead unpaused one is the watchdog's: both starting it makes two copies)."""
    for name in children:
        child = sup.children[name]
        if child.hold is Hold.PAUSED:
            if not child.alive():
                child.start()
            sup.pause_restarts(name, False)
        wait_until(child.alive, timeout, f"{name} running")


def stop_child(sup: Supervisor, name: str, timeout: float = 30.0) -> int | None:
    """Graceful stop (SIGTERM) with restarts paused; returns the exit code."""
    sup.pause_restarts(name, True)
    child = sup.children[name]
    child.signal(signal.SIGTERM)
    if not child.wait(timeout):
        child.signal(signal.SIGKILL)
        child.wait(5)
    return child.proc.returncode if child.proc else None


def kill_child(sup: Supervisor, name: str, *, restart: bool) -> None:
    """SIGKILL; with ``restart`` the supervisor's watchdog brings it back after its delay."""
    sup.pause_restarts(name, not restart)
    sup.kill(name, signal.SIGKILL)
    sup.children[name].wait(10)


def _offsets(settings: HarnessSettings, group: str, topic: str) -> dict[int, tuple[int, int, int]]:
    """Per partition of ``topic``: (log start, end, ``group``'s committed offset or a negative)."""
    with closing(Consumer(kafka_adapter.consumer_config(settings, group, log_level=0))) as consumer:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        marks = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10) for tp in tps}
    return {p: (low, high, committed.get(p, -1)) for p, (low, high) in marks.items()}


def end_offsets(settings: HarnessSettings, topic: str = names.TOPIC) -> dict[int, int]:
    """A topic's end offset per partition: where records written from now on will start."""
    return {p: high for p, (_low, high, _c) in _offsets(settings, settings.processor.group, topic).items()}


def rewind_group(
    settings: HarnessSettings,
    group: str | None = None,
    *,
    to: Mapping[int, int] | None = None,
    topic: str = names.TOPIC,
) -> int:
    """Set the group's (default: the processor's) partitions back to ``to`` (never below the log start)
    or to the log start; the records to re-read. Retried: a killed or static member keeps the group
    non-empty (refused per partition inside a successful reply) until its session times out."""
    group = group or settings.processor.group
    offsets = _offsets(settings, group, topic)
    target = {p: max(low, (to or {}).get(p, low)) for p, (low, _high, _c) in offsets.items()}
    backlog = sum(max(0, c - target[p]) for p, (_low, _high, c) in offsets.items() if c >= 0)
    admin = kafka_adapter.admin(settings)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in target.items()])]

    def refused() -> str:
        """What the broker refused ("" for nothing)."""
        try:
            reply = admin.alter_consumer_group_offsets(request)[group].result(10)
        except KafkaException as exc:
            return str(exc)
        return "; ".join(f"{tp.partition}: {tp.error}" for tp in reply.topic_partitions or [] if tp.error)

    if problem := polled(refused, lambda p: not p, "not tried", timeout=30, interval=1.0, errors=())[0]:
        raise DeliveryError(f"cannot rewind group {group}: {problem}", component="kafka")
    log.info("rewound group %s (%d records to re-read)", group, backlog)
    return backlog


def produce_raw(settings: HarnessSettings, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Write (key, value) records straight to the main topic, bypassing ingest's validation."""
    producer = Producer(kafka_adapter.producer_config(settings))
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err:
            failures.append(str(err))

    for key, value in records:
        producer.produce(names.TOPIC, value=value, key=key, on_delivery=delivered)
    if producer.flush(15) or failures:
        raise DeliveryError(f"raw records not confirmed: {failures}", component="kafka")


def delete_markers(settings: HarnessSettings) -> int:
    """Delete every dedup marker: only the database's UNIQUE index then stops a redelivered scan."""
    with redis_adapter.client(settings) as client:
        keys = client.scan_iter(match=f"{names.DEDUP_PREFIX}*", count=5000)
        chunks = iter(lambda: list(islice(keys, 5000)), [])  # deleted as found, never all held at once
        return sum(int(client.unlink(*chunk)) for chunk in chunks)


def flush_redis(settings: HarnessSettings) -> int:
    """FLUSHALL: every stream, pending list, consumer group, marker and heartbeat is gone."""
    with redis_adapter.client(settings) as client:
        keys = int(client.dbsize())
        client.flushall()
        return keys


FULL_MAXMEMORY = "1mb"  # below what any running Redis of ours holds: every write needing memory is refused


def set_maxmemory(settings: HarnessSettings, value: str = FULL_MAXMEMORY) -> str:
    """Set Redis's maxmemory (by default: full, as it runs noeviction); returns the one it replaced."""
    with redis_adapter.client(settings) as client:
        old = str(client.config_get("maxmemory")["maxmemory"])
        client.config_set("maxmemory", value)
        return old


def own_filesystem(path: Path) -> bool:
    """``path`` is on another filesystem than ``/``: filling it cannot starve the machine."""
    return os.stat(path).st_dev != os.stat("/").st_dev


def fill_disk(path: Path) -> tuple[Path, int]:
    """Fill the filesystem holding ``path`` with one ballast file, so every server writing there meets
    ENOSPC at once; returns the file and its size. ``posix_fallocate`` is instant at any size and, as
    root, takes root's reserved blocks too (servers running as root are refused as well)."""
    if not own_filesystem(path):
        raise PipelineError(f"{path} is on the root filesystem: a disk-full fault needs it on its own mount",
                            component="chaos")  # fmt: skip
    ballast = path / ".nemesis-ballast"
    st = os.statvfs(path)
    size = st.f_bfree * st.f_frsize
    with os.fdopen(os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600), "wb") as f:
        while size > 0:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                break
            except OSError:  # metadata needs a few blocks too: back off until it fits
                size -= max(st.f_frsize, size // 100)
    return ballast, size


def ingest_url(settings: HarnessSettings) -> str:
    return f"http://{settings.ingest.host}:{settings.ingest.port}"


def post_once(settings: HarnessSettings, scan: ScanEvent, timeout: float) -> tuple[int, str | None]:
    """POST one scan to ingest: (status, 0 for no answer in time; its Retry-After header)."""
    url = ingest_url(settings) + names.ROUTE_SCAN
    headers = {"Content-Type": "application/json", **client_headers(settings.ingest_api_key)}
    req = urllib.request.Request(url, data=encode_scan(scan), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # loopback URL we built
            return int(resp.status), None
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("Retry-After")
    except (urllib.error.URLError, OSError) as exc:
        log.warning("no answer from ingest: %s", exc)
        return 0, None


def post_scan(settings: HarnessSettings, scan: ScanEvent, *, timeout: float = 30.0) -> int:
    """POST one scan until a 2xx or a final 4xx (not 408/429), retrying as a scanner does; the status."""
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        status, _ = post_once(settings, scan, 10.0)
        if 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429)):
            return status
        if time.monotonic() > deadline:
            raise PipelineError(f"scan {scan.scan_id} not accepted within {timeout:.0f}s (last {status})",
                                component="chaos")  # fmt: skip
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


class IngestProbe:
    """From creation until stopped, POSTs one fresh scan every ``interval_s`` and tallies the answers:
    unlike the load (which resends whatever fails) it tells a 503 with ``Retry-After`` from a 500."""

    interval_s = 0.5
    timeout_s = 10.0

    def __init__(self, settings: HarnessSettings) -> None:
        self.settings = settings
        self.statuses: Counter[int] = Counter()  # 0: no answer in time
        self.unavailable_without_retry_after = 0
        self.slowest_s = 0.0
        self.acknowledged: set[ScanKey] = set()  # 2xx: the ledger must find these
        self._token = secrets.token_hex(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout_s + 5)

    def summary(self) -> str:
        shown = ", ".join(f"{'no answer' if s == 0 else s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{shown or 'no request'}; slowest {self.slowest_s:.1f} s"

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            scan = ScanEvent(f"990{i:010d}", SEEDED_DEVICES[0], int(time.time() * 1000),
                             f"probe-{self._token}-{i}")  # fmt: skip
            started = time.monotonic()
            status, retry_after = post_once(self.settings, scan, self.timeout_s)
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            self.statuses[status] += 1
            self.unavailable_without_retry_after += status == 503 and not retry_after
            if 200 <= status < 300:
                self.acknowledged.add((scan.device_id, scan.scan_id))
            self._stop.wait(self.interval_s)


def run_cli(
    settings: HarnessSettings, args: Sequence[str], *, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run ``barcode-pipeline ARGS`` as an operator would, with exactly these settings."""
    env = {**os.environ, **settings_env(settings)}
    command = [sys.executable, "-m", "barcode_pipeline", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
