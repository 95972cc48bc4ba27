"""The scanner simulator: center PCs that generate scans and deliver them through a durable outbox.

Flow of one scan: generated -> buffered -> committed to the outbox (one transaction per ~20 ms)
-> queued on its device's lane -> POSTed -> outcome buffered -> committed (acked / retry later /
rejected) -> released from memory. A scan is sent only after its row is committed, and its row
leaves ``pending`` only after a 2xx, so any crash in between means "send again", never "lost".

Memory is bounded: at most ``max_in_memory`` scans are queued or in flight; the rest wait in the
outbox and a relay claims them (oldest first) as room frees up, together with failed scans whose
back-off has expired. All SQLite work runs on one dedicated thread, off the event loop.

Why one file over 500 lines: generation, the device lanes, the relay and the outcome buffer share
the in-memory accounting that keeps the bound above; it is only correct when read as one piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import aiohttp
import orjson

from barcode_harness.scanner.backoff import EndpointGate, parse_retry_after
from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_harness.scanner.outbox import Ack, Outbox, OutboxCounts, OutboxItem, Reject, Retry
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, encode_batch, encode_scan
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.domain.scan import ScanEvent
from barcode_pipeline.errors import ConfigError, PipelineError
from barcode_pipeline.retry import backoff_delay

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

SINGLE_PATH = names.ROUTE_SCAN
BATCH_PATH = names.ROUTE_BATCH
_JSON = {"Content-Type": "application/json"}
_MAX_BODY_IN_ERROR = 2000
Mode = Literal["single", "batch"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything a simulator run needs. ``count``/``duration_s`` both None = run until stopped."""

    url: str
    outbox_path: Path
    devices: tuple[str, ...] = SEEDED_DEVICES
    rate_per_device: float = 10.0  # scans/s each device generates
    count: int | None = None  # total scans to generate (over all devices); 0 = only drain the outbox
    duration_s: float | None = None
    mode: Mode = "single"
    batch_size: int = 100
    batch_interval_s: float = 1.0  # time trigger: a batch leaves at most this long after its first scan
    duplicate_ratio: float = 0.0
    itf14_ratio: float = 0.3
    concurrency: int = 4  # requests (single) or batches (batch) in flight per device
    # single mode: a device whose queue holds a backlog (e.g. after an outage) resends it through
    # the batch endpoint, up to this many scans per request, as a scanner catching up would; 0 = never
    catch_up_batch: int = 0
    request_timeout_s: float = 10.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0
    drain_timeout_s: float | None = 30.0  # after generating, wait this long for pending scans; None = forever
    max_in_memory: int = 20_000
    lease_s: float = 120.0
    flush_interval_s: float = 0.02
    relay_interval_s: float = 0.25
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    seed: int | None = None
    api_key: str = ""  # sent as Authorization: Bearer; "" sends none (auth off, or a trusted network)

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (bool(self.devices), "at least one device"),
            (self.rate_per_device > 0, "rate_per_device must be > 0"),
            (self.count is None or self.count >= 0, "count must be >= 0"),
            (self.duration_s is None or self.duration_s > 0, "duration_s must be > 0"),
            (self.mode in ("single", "batch"), "mode is single or batch"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.batch_interval_s > 0, "batch_interval_s must be > 0"),
            (0 <= self.duplicate_ratio < 1, "duplicate_ratio must be in [0, 1)"),
            (0 <= self.itf14_ratio <= 1, "itf14_ratio must be in [0, 1]"),
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (self.catch_up_batch >= 0, "catch_up_batch must be >= 0"),
            (self.request_timeout_s > 0, "request_timeout_s must be > 0"),
            (0 < self.backoff_base_s <= self.backoff_cap_s, "need 0 < backoff_base_s <= backoff_cap_s"),
            (self.max_in_memory >= 1, "max_in_memory must be >= 1"),
            (self.url.startswith(("http://", "https://")), "url must start with http:// or https://"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message, component="scanner")


@dataclass(slots=True)
class SimulatorStats:
    """Counters of this run (the outbox holds the all-time ones)."""

    generated: int = 0
    duplicates: int = 0
    requests: int = 0
    acked: int = 0
    retried: int = 0
    rejected: int = 0
    recovered: int = 0  # pending scans found in the outbox at start
    pending: int = 0  # pending in the outbox right now (committed rows not yet acked/rejected)
    in_memory: int = 0
    endpoint_up: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SimulatorReport:
    stats: SimulatorStats
    outbox: OutboxCounts
    elapsed_s: float
    drained: bool  # nothing left pending in the outbox: every scan was acked or rejected

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.stats.to_dict(),
            "outbox": self.outbox.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
            "drained": self.drained,
        }


@dataclass(slots=True)
class _Lane:
    """The queue of one device: scans committed to the outbox and waiting to be sent."""

    max_batch: int
    queue: deque[tuple[OutboxItem, float]] = field(default_factory=deque)
    pushed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, items: Iterable[OutboxItem], at: float) -> None:
        self.queue.extend((item, at) for item in items)
        self.pushed.set()

    def push_front(self, items: list[OutboxItem], at: float) -> None:
        self.queue.extendleft((item, at) for item in reversed(items))
        self.pushed.set()

    async def get(self) -> OutboxItem:
        while not self.queue:
            self.pushed.clear()
            await self.pushed.wait()
        return self.queue.popleft()[0]

    def take(self, n: int) -> list[OutboxItem]:
        return [self.queue.popleft()[0] for _ in range(min(n, len(self.queue)))]


def _find_index(body: Any) -> int | None:
    """The batch index a 4xx body names (``{"index": 3}`` at any depth), if any."""
    if isinstance(body, dict):
        value = body.get("index")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        for child in body.values():
            found = _find_index(child)
            if found is not None:
                return found
    elif isinstance(body, list):
        for child in body:
            found = _find_index(child)
            if found is not None:
                return found
    return None


def _failed_indices(body: bytes, size: int) -> set[int] | None:
    """``failedIndices`` of a batch answer; None when the body is not the documented shape."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(decoded, dict):
        return None
    raw = decoded.get("failedIndices", [])
    if not isinstance(raw, list) or not all(isinstance(i, int) and 0 <= i < size for i in raw):
        return None
    return set(raw)


def is_retryable(status: int) -> bool:
    """408/429/5xx may succeed later; other 4xx will not. Unexpected 1xx/3xx are retried (never drop)."""
    return status in (408, 429) or status >= 500 or status < 200 or 300 <= status < 400


class Simulator:
    """Runs one simulation; see the module docstring for the flow."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = SimulatorStats()
        self._base = config.url.rstrip("/")
        self._rng = random.Random(config.seed)
        self._factory = ScanFactory(
            config.devices,
            barcodes=BarcodeFactory(seed=self._rng.randrange(1 << 30), itf14_ratio=config.itf14_ratio),
            duplicate_ratio=config.duplicate_ratio,
            seed=self._rng.randrange(1 << 30),
        )
        self._new: list[ScanEvent] = []
        self._acks: list[Ack] = []
        self._retries: list[Retry] = []
        self._rejects: list[Reject] = []
        self._held: set[int] = set()
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_wanted = asyncio.Event()
        self._closing = False
        self._logged_rejects: set[int] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._outbox: Outbox | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gate = EndpointGate(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s, rng=self._rng)
        self._generating = False
        self._fatal: BaseException | None = None
        self._failed = asyncio.Event()

    # ------------------------------------------------------------------ plumbing
    async def _db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A task that dies (e.g. the outbox cannot be written) ends the run: never keep going blind."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scanner task %s failed", task.get_name(), exc_info=task.exception())
            if self._fatal is None:
                self._fatal = task.exception()
            self._failed.set()

    def _lane(self, device_id: str) -> _Lane:
        lane = self._lanes.get(device_id)
        if lane is None:
            lane = self._lanes[device_id] = _Lane(max_batch=self.config.batch_size)
            if self.config.mode == "single":
                for i in range(self.config.concurrency):
                    self._spawn(self._single_sender(lane), f"send-{device_id}-{i}")
            else:
                self._spawn(self._batcher(lane), f"batch-{device_id}")
        return lane

    @property
    def _room(self) -> int:
        return max(0, self.config.max_in_memory - len(self._held))

    # ------------------------------------------------------------------ run
    async def run(self, stop: asyncio.Event | None = None) -> SimulatorReport:
        """Generate (if asked), deliver, drain; returns when done, drained, timed out or ``stop`` is set."""
        stop = stop or asyncio.Event()
        cfg = self.config
        started = time.monotonic()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scanner-outbox")
        flusher: asyncio.Task[None] | None = None
        try:
            self._outbox = await self._db(Outbox, cfg.outbox_path, synchronous=cfg.synchronous)
            await self._db(self._outbox.make_all_due, now_ms())
            counts = await self._db(self._outbox.counts)
            self.stats.recovered = self.stats.pending = counts.pending
            if counts.pending:
                log.info("outbox %s: resuming %d pending scans", cfg.outbox_path, counts.pending)
            connector = aiohttp.TCPConnector(limit=max(1, len(cfg.devices)) * cfg.concurrency + 8)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
                headers=client_headers(cfg.api_key),
            )
            flusher = self._spawn(self._flusher(), "outbox-flusher")
            self._spawn(self._relay(), "outbox-relay")
            for device in cfg.devices:
                self._lane(device)
            work = asyncio.ensure_future(self._generate_then_drain())
            stopper = asyncio.ensure_future(stop.wait())
            failed = asyncio.ensure_future(self._failed.wait())
            try:
                await asyncio.wait({work, stopper, failed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in (work, stopper, failed):
                    fut.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fut
            if work.done() and not work.cancelled():
                work.result()  # re-raise a failure of generation itself
        finally:
            await self._shutdown(flusher)
        if self._fatal is not None:
            if self._outbox is not None:
                self._outbox.close()
            raise PipelineError(f"scanner stopped: {self._fatal!r}", component="scanner") from self._fatal
        assert self._outbox is not None
        final = await asyncio.get_running_loop().run_in_executor(None, _close_and_count, self._outbox)
        self.stats.pending = final.pending
        return SimulatorReport(
            stats=self.stats, outbox=final, elapsed_s=time.monotonic() - started, drained=final.pending == 0
        )

    async def _shutdown(self, flusher: asyncio.Task[None] | None) -> None:
        """Stop sending, then commit every outcome already known (in-flight scans stay pending)."""
        try:
            others = [t for t in self._tasks if t is not flusher]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            self._closing = True
            self._flush_wanted.set()
            if flusher is not None:
                await asyncio.gather(flusher, return_exceptions=True)
            if self._outbox is not None and (self._new or self._acks or self._retries or self._rejects):
                try:
                    await self._flush()
                except Exception as exc:  # already failing: report the first cause, not this echo
                    log.error("final outbox write failed", exc_info=True)
                    if self._fatal is None:
                        self._fatal = exc
        finally:
            if self._session is not None:
                await self._session.close()
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    async def _generate_then_drain(self) -> bool:
        await self._generate()
        timeout = self.config.drain_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = self._new or self._acks or self._retries or self._rejects
            if not busy and self.stats.pending == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                log.warning(
                    "drain timeout: %d scans still pending in %s (they are sent on the next run)",
                    self.stats.pending,
                    self.config.outbox_path,
                )
                return False
            await asyncio.sleep(0.02)

    # ------------------------------------------------------------------ generation
    async def _generate(self) -> None:
        """Each device scans at a steady rate until the count or the duration is reached."""
        cfg = self.config
        devices = cfg.devices
        if cfg.count is None:
            quotas = [math.inf] * len(devices)
        else:
            base, extra = divmod(cfg.count, len(devices))
            quotas = [base + (1 if i < extra else 0) for i in range(len(devices))]
        if not any(quotas):
            return
        self._generating = True
        made = [0] * len(devices)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = min(0.01, max(0.001, 1.0 / cfg.rate_per_device))
        try:
            while True:
                elapsed = loop.time() - start
                # each device scans at t = 0, 1/rate, 2/rate, ...; a duration d holds ceil(d * rate) scans
                due = math.floor(elapsed * cfg.rate_per_device) + 1
                finished = False
                if cfg.duration_s is not None:
                    in_duration = math.ceil(cfg.duration_s * cfg.rate_per_device)
                    finished = due >= in_duration
                    due = min(due, in_duration)
                for i, device in enumerate(devices):
                    target = min(quotas[i], due)
                    while made[i] < target:
                        self._new.append(self._factory.next(device))
                        made[i] += 1
                        self.stats.generated += 1
                self.stats.duplicates = self._factory.duplicates
                if len(self._new) >= 1000:
                    self._flush_wanted.set()
                if finished or all(m >= q for m, q in zip(made, quotas, strict=True)):
                    break
                await asyncio.sleep(tick)
        finally:
            self._generating = False
            self.stats.duplicates = self._factory.duplicates
            self._flush_wanted.set()

    # ------------------------------------------------------------------ outbox writer
    async def _flusher(self) -> None:
        """Commits generated scans and recorded outcomes in one transaction per cycle."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), timeout=self.config.flush_interval_s)
            self._flush_wanted.clear()
            await self._flush()
            if self._closing:
                return

    async def _flush(self) -> None:
        assert self._outbox is not None
        new, self._new = self._new, []
        acks, self._acks = self._acks, []
        retries, self._retries = self._retries, []
        rejects, self._rejects = self._rejects, []
        if not (new or acks or retries or rejects):
            return
        leased = 0 if self._closing else min(self._room, len(new))
        result = await self._db(
            self._outbox.write,
            new,
            now_ms=now_ms(),
            lease_ms=int(self.config.lease_s * 1000),
            leased=leased,
            acks=acks,
            retries=retries,
            rejects=rejects,
        )
        for outcome in (acks, retries, rejects):
            for o in outcome:
                self._held.discard(o.seq)
        self.stats.acked += result.acked
        self.stats.rejected += result.rejected
        self.stats.pending += len(result.added) - result.acked - result.rejected
        if leased:
            at = time.monotonic()
            by_device: dict[str, list[OutboxItem]] = {}
            for item in result.added[:leased]:
                self._held.add(item.seq)
                by_device.setdefault(item.scan.device_id, []).append(item)
            for device, items in by_device.items():
                self._lane(device).push(items, at)
        self.stats.in_memory = len(self._held)

    async def _relay(self) -> None:
        """Claims due scans from the outbox (retries whose back-off expired, overflow, a previous run's)."""
        assert self._outbox is not None
        lease_ms = int(self.config.lease_s * 1000)
        while True:
            room = self._room
            if room and self.stats.pending > len(self._held):
                items = await self._db(
                    self._outbox.claim_due,
                    now_ms=now_ms(),
                    limit=min(room, 5000),
                    lease_ms=lease_ms,
                    exclude=frozenset(self._held),
                )
                if items:
                    at = time.monotonic()
                    for item in items:
                        self._held.add(item.seq)
                        self._lane(item.scan.device_id).push([item], at)
                    self.stats.in_memory = len(self._held)
                    if len(items) == min(room, 5000):
                        continue  # more may be due right away
            await asyncio.sleep(self.config.relay_interval_s)

    # ------------------------------------------------------------------ outcomes
    def _ack(self, items: Iterable[OutboxItem], status: int) -> None:
        self._acks.extend(Ack(item.seq, status) for item in items)

    def _retry(
        self, items: Iterable[OutboxItem], status: int | None, error: str, retry_after: float | None
    ) -> None:
        cfg = self.config
        now = now_ms()
        for item in items:
            delay = backoff_delay(
                item.attempts + 1, base_s=cfg.backoff_base_s, cap_s=cfg.backoff_cap_s, rng=self._rng
            )
            if retry_after is not None:
                delay = max(delay, retry_after)
            self._retries.append(Retry(item.seq, now + int(delay * 1000), status, error))
            self.stats.retried += 1

    def _reject(self, items: Iterable[OutboxItem], status: int, body: str) -> None:
        items = list(items)
        self._rejects.extend(Reject(item.seq, status, body) for item in items)
        if status not in self._logged_rejects:
            self._logged_rejects.add(status)
            log.warning(
                "ingest refused %d scan(s) with %d (kept as rejected in the outbox, not retried; "
                "further %d answers are counted, not logged): %s",
                len(items),
                status,
                status,
                body[:500],
            )

    def _note_failure(self, gen: int, retry_after: float | None, reason: str) -> None:
        was_up = self._gate.is_closed
        self._gate.failure(gen, retry_after)
        if was_up and not self._gate.is_closed:
            self.stats.endpoint_up = False
            log.warning("ingest unavailable (%s); scans stay in the outbox and are retried", reason)

    def _note_success(self, gen: int) -> None:
        if not self._gate.is_closed or self._gate.failures:
            log.info("ingest reachable again")
        self.stats.endpoint_up = True
        self._gate.success(gen)

    # ------------------------------------------------------------------ HTTP
    async def _post(self, path: str, body: bytes) -> tuple[int, bytes, float | None]:
        assert self._session is not None
        async with self._session.post(
            self._base + path, data=body, headers=_JSON, allow_redirects=False
        ) as resp:
            payload = await resp.read()
            return resp.status, payload, parse_retry_after(resp.headers.get("Retry-After"))

    async def _single_sender(self, lane: _Lane) -> None:
        catch_up = self.config.catch_up_batch
        backlog = self.config.concurrency
        while True:
            item = await lane.get()
            if catch_up > 1 and len(lane.queue) >= backlog:
                await self._send_batch(lane, [item, *lane.take(min(catch_up, lane.max_batch) - 1)])
                continue
            gen = await self._gate.acquire()
            try:
                self.stats.requests += 1
                status, payload, retry_after = await self._post(SINGLE_PATH, encode_scan(item.scan))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self._note_failure(gen, None, reason)
                self._retry([item], None, reason, None)
                continue
            except asyncio.CancelledError:
                self._gate.abandon(gen)
                raise
            if 200 <= status < 300:
                self._note_success(gen)
                self._ack([item], status)
            elif is_retryable(status):
                self._note_failure(gen, retry_after, f"HTTP {status}")
                self._retry([item], status, f"HTTP {status}: {payload[:_MAX_BODY_IN_ERROR]!r}", retry_after)
            else:
                self._note_success(gen)
                self._reject([item], status, payload[:_MAX_BODY_IN_ERROR].decode("utf-8", "replace"))

    async def _batcher(self, lane: _Lane) -> None:
        """Size trigger + time trigger: a batch leaves when full or when its oldest scan waited long."""
        slots = asyncio.Semaphore(self.config.concurrency)
        interval = self.config.batch_interval_s
        while True:
            while not lane.queue:
                lane.pushed.clear()
                await lane.pushed.wait()
            deadline = lane.queue[0][1] + interval
            while len(lane.queue) < lane.max_batch and self._generating:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                lane.pushed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.pushed.wait(), timeout=remaining)
            # when generation is over nothing more is coming: send what is queued without waiting
            await slots.acquire()
            batch = lane.take(lane.max_batch)
            if not batch:
                slots.release()
                continue
            task = self._spawn(self._send_batch(lane, batch), "batch-send")
            task.add_done_callback(lambda _t: slots.release())

    async def _send_batch(self, lane: _Lane, items: list[OutboxItem]) -> None:
        gen = await self._gate.acquire()
        try:
            self.stats.requests += 1
            status, payload, retry_after = await self._post(BATCH_PATH, encode_batch([i.scan for i in items]))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._note_failure(gen, None, reason)
            self._retry(items, None, reason, None)
            return
        except asyncio.CancelledError:
            self._gate.abandon(gen)
            raise
        if 200 <= status < 300:
            self._note_success(gen)
            failed = _failed_indices(payload, len(items))
            if failed is None:
                if status == 207:  # partial success we cannot decode: resend all (the server dedups)
                    self._retry(items, status, "unreadable 207 body", None)
                    return
                failed = set()
            self._ack((item for i, item in enumerate(items) if i not in failed), status)
            self._retry((items[i] for i in sorted(failed)), status, "not confirmed (failedIndices)", None)
        elif is_retryable(status):
            self._note_failure(gen, retry_after, f"HTTP {status}")
            self._retry(items, status, f"HTTP {status}: {payload[:_MAX_BODY_IN_ERROR]!r}", retry_after)
        else:
            self._note_success(gen)
            self._refused_batch(lane, items, status, payload)

    def _refused_batch(self, lane: _Lane, items: list[OutboxItem], status: int, payload: bytes) -> None:
        """A 4xx for a batch: drop only what the server blames, resend the innocent rest."""
        text = payload[:_MAX_BODY_IN_ERROR].decode("utf-8", "replace")
        at = time.monotonic()
        if status == 413 and len(items) > 1:
            lane.max_batch = max(1, len(items) // 2)
            log.warning(
                "ingest answered 413 to a batch of %d; batches are now %d", len(items), lane.max_batch
            )
            lane.push_front(items, at)
            return
        index: int | None = None
        with contextlib.suppress(orjson.JSONDecodeError):
            index = _find_index(orjson.loads(payload))
        if index is not None and 0 <= index < len(items) and len(items) > 1:
            self._reject([items[index]], status, text)
            lane.push_front(items[:index] + items[index + 1 :], at)
            return
        self._reject(items, status, text)


def _close_and_count(outbox: Outbox) -> OutboxCounts:
    try:
        return outbox.counts()
    finally:
        outbox.close()
