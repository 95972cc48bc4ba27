"""Fault and repair primitives the scenarios are built from.

Each is small and does one thing to one system, the way an operator (or a crash) would: signal a
supervised child, rewind a Kafka consumer group, delete Redis keys, write raw bytes to a topic,
resend scans over HTTP. None of them checks anything; the checks live in ``chaos.checks``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition

from barcode_harness.scanner.scans import encode_scan
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


# ---------------------------------------------------------------------------------------- children
def resume(sup: Supervisor, name: str, *, timeout: float = 30.0) -> None:
    """Make sure a child runs and is supervised again; returns once it is alive.

    Only a paused child is started here, and before its pause is lifted: a dead child that is not
    paused belongs to the watchdog, and starting it from here too (or lifting the pause first, as
    ``Supervisor.restart`` does) can race the watchdog into running two copies of it.
    """
    child = sup.children[name]
    if child.hold is Hold.PAUSED:
        if not child.alive():
            child.start()
        sup.pause_restarts(name, False)
    deadline = time.monotonic() + timeout
    while not child.alive():
        if time.monotonic() > deadline:
            raise PipelineError(f"{name} is not running after {timeout:.0f}s", component="chaos")
        time.sleep(0.1)


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


def wait_exit(sup: Supervisor, name: str, timeout: float) -> int | None:
    """Wait for a child to exit by itself (e.g. a crash hook); its exit code, or None if still alive."""
    child = sup.children[name]
    if not child.wait(timeout):
        return None
    return child.proc.returncode if child.proc else None


# ---------------------------------------------------------------------------------------- Kafka
def _offsets(settings: HarnessSettings, group: str, topic: str) -> dict[int, tuple[int, int, int]]:
    """Per partition of ``topic``: (log start, end, ``group``'s committed offset or a negative)."""
    consumer = Consumer(kafka_adapter.consumer_config(settings, group, log_level=0))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        marks = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10) for tp in tps}
    finally:
        consumer.close()
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
    timeout: float = 30.0,
) -> tuple[int, int]:
    """Set every partition of the group (default: the processor's) back to ``to`` (per partition,
    never below the log start) or, without it, to the log start.

    Returns (records to re-read, tries).

    A scenario passes the offsets from before its own load: on a stack whose topic holds the
    history of earlier runs (millions of records after a bench series), a re-read from the log
    start cannot finish within a scenario's drain timeout.

    The group must be empty for the broker to accept it. A member that was killed, or a static
    member (the supervisor's processors) even after a clean stop, keeps it non-empty until its
    session times out, hence the retries. The broker refuses per partition, inside a successful
    reply, so every partition's error is checked.
    """
    group = group or settings.processor.group
    offsets = _offsets(settings, group, topic)
    target = {p: max(low, (to or {}).get(p, low)) for p, (low, _high, _c) in offsets.items()}
    backlog = sum(max(0, c - target[p]) for p, (_low, _high, c) in offsets.items() if c >= 0)
    admin = kafka_adapter.admin(settings)
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in target.items()])]
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        try:
            reply = admin.alter_consumer_group_offsets(request)[group].result(10)
            refused = [f"{tp.partition}: {tp.error}" for tp in reply.topic_partitions or [] if tp.error]
            if not refused:
                log.info("rewound group %s (%d records to re-read)", group, backlog)
                return backlog, tries
            problem = "; ".join(refused)
        except KafkaException as exc:
            problem = str(exc)
        if time.monotonic() > deadline:
            raise DeliveryError(f"cannot rewind group {group}: {problem}", component="kafka")
        time.sleep(1.0)


def produce_raw(settings: HarnessSettings, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Write (key, value) records straight to the main topic, bypassing ingest's validation."""
    producer = Producer(kafka_adapter.producer_config(settings))
    failures: list[str] = []
    for key, value in records:
        producer.produce(
            names.TOPIC,
            value=value,
            key=key,
            on_delivery=lambda err, _m: failures.append(str(err)) if err else None,
        )
    if producer.flush(15) or failures:
        raise DeliveryError(f"raw records not confirmed: {failures}", component="kafka")


# ---------------------------------------------------------------------------------------- Redis
def delete_markers(settings: HarnessSettings) -> int:
    """Delete every dedup marker: only the database's UNIQUE index then stops a redelivered scan."""
    client = redis_adapter.client(settings)
    deleted = 0
    try:
        batch: list[str] = []
        for key in client.scan_iter(match=f"{names.DEDUP_PREFIX}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


def flush_redis(settings: HarnessSettings) -> int:
    """FLUSHALL: every stream, pending list, consumer group, marker and heartbeat is gone."""
    client = redis_adapter.client(settings)
    try:
        keys = int(client.dbsize())
        client.flushall()
        return keys
    finally:
        client.close()


FULL_MAXMEMORY = "1mb"  # below what any running Redis of ours holds: every write needing memory is refused


def fill_redis(settings: HarnessSettings) -> str:
    """Make Redis full (maxmemory below its use, noeviction); returns the maxmemory to restore."""
    client = redis_adapter.client(settings)
    try:
        old = str(client.config_get("maxmemory")["maxmemory"])
        client.config_set("maxmemory", FULL_MAXMEMORY)
        return old
    finally:
        client.close()


def restore_maxmemory(settings: HarnessSettings, old: str) -> None:
    client = redis_adapter.client(settings)
    try:
        client.config_set("maxmemory", old)
    finally:
        client.close()


# ---------------------------------------------------------------------------------------- disks
BALLAST = ".nemesis-ballast"


def own_filesystem(path: Path) -> bool:
    """``path`` is on another filesystem than ``/``: filling it cannot starve the machine."""
    return os.stat(path).st_dev != os.stat("/").st_dev


def fill_disk(path: Path) -> tuple[Path, int]:
    """Fill the filesystem holding ``path`` with one preallocated ballast file: every server writing
    there meets ENOSPC at once, as on a data disk that ran full. Returns the file and its size.

    ``posix_fallocate`` reserves the blocks without writing them (instant, any size); run as root it
    takes the blocks reserved for root as well, so servers running as root are refused too.
    """
    if not own_filesystem(path):
        raise PipelineError(f"{path} is on the root filesystem: a disk-full fault needs it on its own mount",
                            component="chaos")  # fmt: skip
    ballast = path / BALLAST
    st = os.statvfs(path)
    size = st.f_bfree * st.f_frsize
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while size > 0:
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError:  # metadata needs a few blocks too: back off until it fits
                size -= max(st.f_frsize, size // 100)
    finally:
        os.close(fd)
    return ballast, size


def free_disk(ballast: Path) -> None:
    ballast.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- HTTP
def post_scan(base_url: str, scan: ScanEvent, *, api_key: str, timeout: float = 30.0) -> tuple[int, int]:
    """POST one scan until a 2xx (retrying 5xx/429/network errors as a scanner does).

    Returns (final status, attempts); a 4xx other than 408/429 is final and returned as is.
    """
    body = encode_scan(scan)
    deadline = time.monotonic() + timeout
    attempts = 0
    delay = 0.1
    while True:
        attempts += 1
        req = urllib.request.Request(
            base_url.rstrip("/") + names.ROUTE_SCAN,
            data=body,
            headers={"Content-Type": "application/json", **client_headers(api_key)},
            method="POST",
        )
        status = 0
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # loopback URL we built
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            log.debug("post failed: %s", exc)
        if 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429)):
            return status, attempts
        if time.monotonic() > deadline:
            raise PipelineError(f"scan {scan.scan_id} not accepted within {timeout:.0f}s (last {status})",
                                component="chaos")  # fmt: skip
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


# ---------------------------------------------------------------------------------------- CLI
def run_cli(
    settings: HarnessSettings, args: Sequence[str], *, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run ``barcode-pipeline ARGS`` as an operator would, with exactly these settings."""
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run(
        [sys.executable, "-m", "barcode_pipeline", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
