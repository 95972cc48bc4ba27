"""The evidence: what the clients were told, against what the database and dead-letter stores hold
(facts read back from the stores, never what a component reported about itself)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import redis

from barcode_harness.chaos.load import ScanKey
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.domain import named_fields
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.ops import dlq, dlt
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.probes.backlog import Backlog, measure

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Check:
    """One named pass/fail fact of a scenario, with what was observed."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Ledger:
    """Acknowledged scans, accounted for."""

    acknowledged: int = 0  # distinct scans the clients got a 2xx for
    stored: int = 0  # of those, with a row
    dead_lettered: int = 0  # of those, without a row but in a dead-letter store
    lost: int = 0  # neither stored nor dead-lettered
    duplicate_rows: int = 0  # rows beyond the first, for acknowledged scans
    stray_duplicates: int = 0  # rows beyond the first for any scan saved during the scenario
    never_sent: int = 0  # rows of the clients' devices saved meanwhile for scans no client made
    never_sent_sample: list[str] = field(default_factory=list)
    stored_and_dead: int = 0  # both a row and a dead letter (a dead letter that should not be)
    dead_without_reason: int = 0  # dead letters that do not say why
    lost_sample: list[str] = field(default_factory=list)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


def dead_letter_index(settings: HarnessSettings, since_ms: int) -> dict[ScanKey, str]:
    """Every scan found in the DLQ or the DLT since ``since_ms``, with its reason."""
    with dlq.binary_client(settings) as client:
        letters = [(x, "barcode:dlq") for x in dlq.read_dlq(client, since_ms=since_ms)]
    letters += [(x, names.DLT_TOPIC) for x in dlt.read_dlt(settings, since_ms=since_ms)]
    return {(x.device_id, x.scan_id): f"{at}: {x.reason}" for x, at in letters if x.device_id and x.scan_id}


def query(settings: HarnessSettings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """The rows of one statement, on a connection (autocommit) of its own."""
    with db.connect(settings.db.url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def stray_duplicates(settings: HarnessSettings, since_ms: int) -> int:
    """Rows beyond the first per (device, scan) among rows saved since ``since_ms`` (any scan at all)."""
    sql = ("SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM barcodes"
           " WHERE saved_time >= %s GROUP BY device_id, scan_id HAVING COUNT(*) > 1) d")  # fmt: skip
    rows = query(settings, sql, db.db_time(since_ms - 5_000))  # saved_time is UTC; allow clock slack
    return int(rows[0][0]) if rows else 0


def never_sent(settings: HarnessSettings, since_ms: int, sent: set[ScanKey]) -> list[ScanKey]:
    """Rows of ``sent``'s devices since ``since_ms`` for scans not in ``sent``: invented or corrupted."""
    devices = sorted({device for device, _scan in sent})
    if not devices:
        return []
    # The clients stamp scans when made, after ``since_ms`` (same clock): earlier runs' are older.
    marks = ",".join(["%s"] * len(devices))
    rows = query(settings, f"SELECT device_id, scan_id FROM barcodes WHERE device_id IN ({marks})"
                  " AND scan_time >= %s", *devices, db.db_time(since_ms))  # fmt: skip
    return sorted(key for d, s in rows if (key := (str(d), str(s))) not in sent)


def verify(
    settings: HarnessSettings,
    acknowledged: Iterable[ScanKey],
    since_ms: int,
    sent: set[ScanKey] | None = None,
) -> Ledger:
    """Account for every acknowledged scan; with ``sent``, also for rows of scans never sent."""
    acked = set(acknowledged)
    dead = dead_letter_index(settings, since_ms)
    acked_dead = {k for k in acked if k in dead}
    main = verify_scan_ids(settings.db.url, [sid for _dev, sid in acked - acked_dead])
    in_dlq = verify_scan_ids(settings.db.url, [sid for _dev, sid in acked_dead])
    strays = never_sent(settings, since_ms, sent | acked) if sent is not None else []
    return Ledger(
        acknowledged=len(acked),
        stored=main.stored + in_dlq.stored,
        dead_lettered=len(acked_dead) - in_dlq.stored,
        lost=main.missing,
        duplicate_rows=main.duplicate_rows + in_dlq.duplicate_rows,
        stray_duplicates=stray_duplicates(settings, since_ms),
        never_sent=len(strays),
        never_sent_sample=[f"{d}/{s}" for d, s in strays[:5]],
        stored_and_dead=in_dlq.stored,
        dead_without_reason=sum(1 for k in acked_dead if "(no reason" in dead[k]),
        lost_sample=main.missing_sample,
        dead_letter_reasons=dict(Counter(dead[k][:80] for k in acked_dead)),
    )


def rows_for(settings: HarnessSettings, keys: Iterable[ScanKey]) -> dict[ScanKey, int]:
    """Row count per scan (0 for none)."""
    wanted = sorted(set(keys))
    counts = dict.fromkeys(wanted, 0)
    with db.connect(settings.db.url, autocommit=True) as conn, conn.cursor() as cur:  # one for every chunk
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join(["(%s, %s)"] * len(chunk))
            sql = (f"SELECT device_id, scan_id, COUNT(*) FROM barcodes"
                   f" WHERE (device_id, scan_id) IN ({marks}) GROUP BY device_id, scan_id")  # fmt: skip
            cur.execute(sql, [v for key in chunk for v in key])
            for dev, sid, n in cur.fetchall():
                counts[(str(dev), str(sid))] = int(n)
    return counts


def pending_ids(client: redis.Redis, streams: Sequence[str], consumer: str) -> set[tuple[str, str]]:
    """(stream, entry id) of every entry in ``consumer``'s pending list."""
    out: set[tuple[str, str]] = set()
    for stream in streams:
        try:
            rows: Any = client.xpending_range(
                stream, names.WORKER_GROUP, min="-", max="+", count=100_000, consumername=consumer
            )
        except redis.ResponseError:  # no stream or group (yet, or any more)
            continue
        out.update((stream, str(r["message_id"])) for r in rows)
    return out


class TakeoverProbe:
    """How long the entries dead consumers held at the kill stay theirs (not acknowledged nor claimed)."""

    def __init__(
        self, settings: HarnessSettings, consumers: Sequence[str], *, started: float | None = None
    ) -> None:
        self.streams = names.all_streams(settings.streams.shards)
        self.started = time.monotonic() if started is None else started  # reset to time from a restart
        self._client = redis_adapter.client(settings)
        self.held = {c: pending_ids(self._client, self.streams, c) for c in consumers}
        self.initial = sum(len(v) for v in self.held.values())
        self.done_after_s: float | None = 0.0 if self.initial == 0 else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> bool:
        """True once every entry has left the dead consumers; records when."""
        if self.done_after_s is not None:
            return True
        try:
            for consumer, held in self.held.items():
                self.held[consumer] = pending_ids(self._client, self.streams, consumer) & held
        except redis.RedisError as exc:
            log.debug("takeover probe: %s", exc)
            return False
        if any(self.held.values()):
            return False
        self.done_after_s = time.monotonic() - self.started
        return True

    def start(self) -> None:
        """Poll in the background, so the moment of completion is caught whatever the caller does."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="takeover-probe", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self.poll() and not self._stop.wait(0.1):
            pass

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for completion."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()
        self._client.close()


def polled(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    last: T,
    timeout: float = 60.0,
    interval: float = 0.1,
    errors: tuple[type[Exception], ...] = (Exception,),
) -> tuple[T, float]:
    """(``probe``'s last value, seconds) once ``done`` held for it or ``timeout`` passed. ``errors`` count as
    not yet (by default any: a node in failover answers with errors of every kind); others surface."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(*errors):
            last = probe()
            if done(last):
                break
        time.sleep(interval)
    return last, time.monotonic() - t0


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    errors: tuple[type[Exception], ...] = (Exception,),
) -> None:
    """``condition`` polled until true (``errors`` count as not yet, as in :func:`polled`); an error past
    ``timeout``."""
    if not polled(condition, bool, False, timeout, errors=errors)[0]:
        raise PipelineError(f"timed out after {timeout:.0f}s waiting for: {what}", component="chaos")


def wait_pending(settings: HarnessSettings, consumer: str, *, at_least: int = 1, timeout: float = 3.0) -> int:
    """How many ``consumer`` holds once ``at_least`` (so a kill lands mid-batch) or at the timeout."""
    streams = names.all_streams(settings.streams.shards)
    with redis_adapter.client(settings) as client:
        return polled(lambda: len(pending_ids(client, streams, consumer)), lambda n: n >= at_least, 0,
                      timeout, interval=0.01, errors=(redis.RedisError,))[0]  # fmt: skip


def wait_caught_up(settings: HarnessSettings, *, max_lag: int, timeout: float) -> float:
    """Seconds until the processor lags at most ``max_lag`` records (under load it never reaches zero)."""

    def caught_up(b: Backlog | None) -> bool:
        return b is not None and not b.errors and b.kafka_lag <= max_lag

    # measure() reports Kafka's and Redis's errors in the backlog itself: anything it raises is a bug
    backlog, took = polled(lambda: measure(settings), caught_up, None, timeout, interval=0.25, errors=())
    if not caught_up(backlog):
        lag = backlog.kafka_lag if backlog else "unknown"
        raise PipelineError(f"processor not caught up after {timeout:.0f}s: lag {lag}", component="chaos")
    return took


@dataclass
class RedisState:
    """What AOF must bring back after a crash: streams, group positions, dedup markers."""

    # entries ever added (XINFO STREAM entries-added): unlike the length, trimming never lowers it
    stream_added: dict[str, int] = field(default_factory=dict)
    newest: dict[str, str] = field(default_factory=dict)  # the newest entry id per stream
    last_delivered: dict[str, str] = field(default_factory=dict)
    markers: list[str] = field(default_factory=list)


def stream_tails(settings: HarnessSettings) -> dict[str, str]:
    """The newest entry id of every shard stream ("0-0" for an empty or missing one)."""
    with redis_adapter.client(settings) as client:
        lasts: Any = {s: client.xrevrange(s, count=1) for s in names.all_streams(settings.streams.shards)}
    return {stream: str(last[0][0]) if last else "0-0" for stream, last in lasts.items()}


def published_since(settings: HarnessSettings, tails: dict[str, str]) -> set[ScanKey]:
    """The scans of every entry added to the shard streams after ``tails``."""
    found: set[ScanKey] = set()
    with redis_adapter.client(settings) as client:
        for stream, after in tails.items():
            while True:
                items: Any = client.xrange(stream, min=f"({after}", max="+", count=5000)
                scans = (named_fields(fields) for _id, fields in items)
                found.update((s["dev"], s["sid"]) for s in scans if "dev" in s and "sid" in s)
                if len(items) < 5000:
                    break
                after = items[-1][0]
    return found


def _id_tuple(entry_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in entry_id.split("-"))


def redis_state(settings: HarnessSettings, *, marker_sample: int = 200) -> RedisState:
    state = RedisState()
    with redis_adapter.client(settings) as client:
        for stream in names.all_streams(settings.streams.shards):
            try:
                info: Any = client.xinfo_stream(stream)
                groups: Any = client.xinfo_groups(stream)
            except redis.ResponseError:  # no such stream
                continue
            state.stream_added[stream] = int(info["entries-added"])
            if info["last-entry"]:
                state.newest[stream] = str(info["last-entry"][0])
            ours = [str(g["last-delivered-id"]) for g in groups if g["name"] == names.WORKER_GROUP]
            state.last_delivered.update({stream: ours[0]} if ours else {})
        markers = client.scan_iter(match=f"{names.DEDUP_PREFIX}*", count=1000)
        state.markers = [str(key) for key in islice(markers, marker_sample)]
    return state


def compare_redis_state(settings: HarnessSettings, before: RedisState) -> list[Check]:
    """Checks that nothing ``before`` saw went missing (workers trim only far older entries; markers
    live 24 h)."""
    after = redis_state(settings, marker_sample=0)
    shorter = {s: (n, after.stream_added.get(s, 0)) for s, n in before.stream_added.items()
               if after.stream_added.get(s, 0) < n}  # fmt: skip
    behind = {s: (i, after.last_delivered.get(s, "0-0")) for s, i in before.last_delivered.items()
              if _id_tuple(after.last_delivered.get(s, "0-0")) < _id_tuple(i)}  # fmt: skip
    with redis_adapter.client(settings) as client:
        present = int(client.exists(*before.markers)) if before.markers else 0
        for stream, newest in before.newest.items():
            if not client.xrange(stream, min=newest, max=newest):
                shorter[stream] = (before.stream_added[stream], -1)
    entries = sum(before.stream_added.values())
    groups_back = bool(before.last_delivered) == bool(after.last_delivered)
    return [
        Check("AOF kept every stream entry", not shorter,
              f"{entries} entries added before the kill" + (f"; lost: {shorter}" if shorter else "")),
        Check("AOF kept the consumer group positions", not behind and groups_back,
              f"{len(before.last_delivered)} groups" + (f"; behind: {behind}" if behind else "")),
        Check("AOF kept the dedup markers", present == len(before.markers),
              f"{present}/{len(before.markers)} sampled markers present after restart"),
    ]  # fmt: skip
