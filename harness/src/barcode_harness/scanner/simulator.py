"""The scanner simulator: center PCs that generate scans and deliver them through a durable outbox.

A scan is committed to the outbox (one transaction per ~20 ms), queued on its device's lane, POSTed,
and its outcome committed: a crash means "send again", never "lost". At most ``_MAX_IN_MEMORY`` scans
are queued or in flight; a relay claims the rest (oldest first). SQLite runs on one thread of its own.
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
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import aiohttp
import orjson

from barcode_harness.scanner.backoff import EndpointGate, parse_retry_after
from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_harness.scanner.outbox import Outbox, OutboxCounts, OutboxItem, Outcome, State, outbox_status
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, encode_batch, encode_scan
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.domain.scan import ScanEvent
from barcode_pipeline.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

Mode = Literal["single", "batch"]
_P = ParamSpec("_P")
_T = TypeVar("_T")

_MAX_BODY_IN_ERROR = 2000
_MAX_IN_MEMORY = 20_000  # scans queued or in flight
_LEASE_MS = 120_000  # a claimed scan is not claimed again for this long
_FLUSH_INTERVAL_S = 0.02


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


@dataclass(frozen=True, slots=True)
class SimulatorReport:
    """What a run did (``run``) and the outbox's all-time counts; ``--json`` prints it as it is."""

    run: SimulatorStats
    outbox: OutboxCounts
    elapsed_s: float  # rounded to ms
    drained: bool  # nothing left pending in the outbox: every scan was acked or rejected


@dataclass(slots=True)
class _Lane:
    """The queue of one device: scans committed to the outbox and waiting to be sent."""

    max_batch: int
    queue: deque[tuple[OutboxItem, float]] = field(default_factory=deque)
    pushed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, items: list[OutboxItem], *, front: bool = False) -> None:
        at = time.monotonic()
        if front:
            self.queue.extendleft((item, at) for item in reversed(items))
        else:
            self.queue.extend((item, at) for item in items)
        self.pushed.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Until something is pushed, or ``timeout`` seconds passed."""
        self.pushed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pushed.wait(), timeout)

    def take(self, n: int) -> list[OutboxItem]:
        return [self.queue.popleft()[0] for _ in range(min(n, len(self.queue)))]


def _find_index(body: Any) -> int | None:
    """The batch index a 4xx body names (``{"index": 3}`` at any depth), if any."""
    if isinstance(body, dict):
        value = body.get("index")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        body = list(body.values())
    if isinstance(body, list):
        return next((found for child in body if (found := _find_index(child)) is not None), None)
    return None


def failed_indices(body: bytes, size: int, *, strict: bool = True) -> set[int] | None:
    """``failedIndices`` of a batch answer of ``size`` scans; None when unreadable.

    Strict (the scanner): an absent key means none failed, one bad index spoils the answer.
    Lenient (the load generator): an absent key is unreadable, bad indices are skipped."""
    try:
        raw = orjson.loads(body).get("failedIndices", [] if strict else None)
    except (orjson.JSONDecodeError, AttributeError):  # not JSON, or not an object
        return None
    if not isinstance(raw, list):
        return None
    good = [isinstance(i, int) and 0 <= i < size for i in raw]
    return set(compress(raw, good)) if all(good) or not strict else None


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
        self._outcomes: list[Outcome] = []
        self._held: set[int] = set()
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_wanted = asyncio.Event()
        self._closing = False
        self._logged_rejects: set[int] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scanner-outbox")
        self._outbox: Outbox | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gate = EndpointGate(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s, rng=self._rng)
        self._generating = False
        self._fatal: BaseException | None = None
        self._failed = asyncio.Event()

    async def _db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
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
            self._fatal = self._fatal or task.exception()
            self._failed.set()

    def _lane(self, device_id: str) -> _Lane:
        lane = self._lanes.get(device_id)
        if lane is None:
            lane = self._lanes[device_id] = _Lane(max_batch=self.config.batch_size)
            self._spawn(self._sender(lane), f"sender-{device_id}")
        return lane

    def _hold(self, items: list[OutboxItem]) -> None:
        """Queue leased scans on their lanes: until answered they count against ``_MAX_IN_MEMORY``."""
        for item in items:
            self._held.add(item.seq)
            self._lane(item.scan.device_id).push([item])
        self.stats.in_memory = len(self._held)

    @property
    def _room(self) -> int:
        return max(0, _MAX_IN_MEMORY - len(self._held))

    @property
    def _unflushed(self) -> bool:
        return bool(self._new or self._outcomes)

    async def run(self, stop: asyncio.Event | None = None) -> SimulatorReport:
        """Generate (if asked), deliver, drain; returns when done, drained, timed out or ``stop`` is set."""
        cfg = self.config
        started = time.monotonic()
        flusher: asyncio.Task[None] | None = None
        try:
            self._outbox = await self._db(Outbox, cfg.outbox_path, synchronous=cfg.synchronous)
            await self._db(self._outbox.make_all_due, now_ms())
            counts = await self._db(outbox_status, cfg.outbox_path)
            self.stats.recovered = self.stats.pending = counts.pending
            if counts.pending:
                log.info("outbox %s: resuming %d pending scans", cfg.outbox_path, counts.pending)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=len(cfg.devices) * cfg.concurrency + 8),
                timeout=aiohttp.ClientTimeout(total=cfg.request_timeout_s),
                headers={**client_headers(cfg.api_key), "Content-Type": "application/json"},
            )
            flusher = self._spawn(self._flusher(), "outbox-flusher")
            self._spawn(self._relay(), "outbox-relay")
            for device in cfg.devices:
                self._lane(device)
            waits = (self._generate_then_drain(), (stop or asyncio.Event()).wait(), self._failed.wait())
            futures = [asyncio.ensure_future(w) for w in waits]
            try:
                await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for fut in futures:
                    fut.cancel()
                await asyncio.gather(*futures, return_exceptions=True)
            if not futures[0].cancelled():
                futures[0].result()  # re-raise a failure of generation itself
        finally:
            await self._shutdown(flusher)
        if self._fatal is not None:
            raise PipelineError(f"scanner stopped: {self._fatal!r}", component="scanner") from self._fatal
        final = await asyncio.to_thread(outbox_status, cfg.outbox_path)
        self.stats.pending = final.pending
        elapsed_s = round(time.monotonic() - started, 3)
        return SimulatorReport(self.stats, final, elapsed_s, drained=final.pending == 0)

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
            if self._outbox is not None:
                try:
                    await self._flush()
                except Exception as exc:  # already failing: report the first cause, not this echo
                    log.error("final outbox write failed", exc_info=True)
                    self._fatal = self._fatal or exc
        finally:
            if self._session is not None:
                await self._session.close()
            self._executor.shutdown(wait=True)
            if self._outbox is not None:
                self._outbox.close()

    async def _generate_then_drain(self) -> None:
        await self._generate()
        try:
            async with asyncio.timeout(self.config.drain_timeout_s):
                while self._unflushed or self.stats.pending:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.warning(
                "drain timeout: %d scans still pending in %s (they are sent on the next run)",
                self.stats.pending,
                self.config.outbox_path,
            )

    async def _generate(self) -> None:
        """Each device scans at t = 0, 1/rate, 2/rate, ... until its quota or the duration is reached."""
        cfg = self.config
        n = len(cfg.devices)
        quotas = [math.inf if cfg.count is None else cfg.count // n + (i < cfg.count % n) for i in range(n)]
        # a duration d holds ceil(d * rate) scans
        in_duration = math.inf if cfg.duration_s is None else math.ceil(cfg.duration_s * cfg.rate_per_device)
        self._generating = True
        made = [0] * n
        start = time.monotonic()
        tick = min(0.01, max(0.001, 1.0 / cfg.rate_per_device))
        try:
            while True:
                due = min(math.floor((time.monotonic() - start) * cfg.rate_per_device) + 1, in_duration)
                for i, device in enumerate(cfg.devices):
                    while made[i] < min(quotas[i], due):
                        self._new.append(self._factory.next(device))
                        made[i] += 1
                        self.stats.generated += 1
                self.stats.duplicates = self._factory.duplicates
                if len(self._new) >= 1000:
                    self._flush_wanted.set()
                if due >= in_duration or all(m >= q for m, q in zip(made, quotas, strict=True)):
                    break
                await asyncio.sleep(tick)
        finally:
            self._generating = False
            self._flush_wanted.set()

    async def _flusher(self) -> None:
        """Commits generated scans and recorded outcomes in one transaction per cycle."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), timeout=_FLUSH_INTERVAL_S)
            self._flush_wanted.clear()
            await self._flush()
            if self._closing:
                return

    async def _flush(self) -> None:
        assert self._outbox is not None
        if not self._unflushed:
            return
        new, outcomes = self._new, self._outcomes
        self._new, self._outcomes = [], []
        leased = 0 if self._closing else min(self._room, len(new))
        result = await self._db(
            self._outbox.write, new, now_ms=now_ms(), lease_ms=_LEASE_MS, leased=leased, outcomes=outcomes
        )
        self._held.difference_update(o.seq for o in outcomes)
        self.stats.acked += result.acked
        self.stats.rejected += result.rejected
        self.stats.pending += len(result.added) - result.acked - result.rejected
        self._hold(result.added[:leased])

    async def _relay(self) -> None:
        """Claims due scans from the outbox (retries whose back-off expired, overflow, a previous run's)."""
        assert self._outbox is not None
        while True:
            limit = min(self._room, 5000)
            if limit and self.stats.pending > len(self._held):
                items = await self._db(
                    self._outbox.claim_due,
                    now_ms=now_ms(),
                    limit=limit,
                    lease_ms=_LEASE_MS,
                    exclude=frozenset(self._held),
                )
                self._hold(items)
                if len(items) == limit:
                    continue  # more may be due right away
            await asyncio.sleep(self.config.relay_interval_s)

    def _retry(
        self, items: Iterable[OutboxItem], status: int | None, error: str, retry_after: float | None
    ) -> None:
        now = now_ms()
        for item in items:
            delay = max(self._gate.delay(item.attempts + 1), retry_after or 0.0)
            self._outcomes.append(Outcome(item.seq, State.PENDING, status, error, now + int(delay * 1000)))
            self.stats.retried += 1

    def _reject(self, items: list[OutboxItem], status: int, body: str) -> None:
        self._outcomes.extend(Outcome(item.seq, State.REJECTED, status, body) for item in items)
        if status not in self._logged_rejects:
            self._logged_rejects.add(status)
            message = "ingest refused %(n)d scan(s) with %(status)d (kept as rejected in the outbox, not"
            message += " retried; further %(status)d answers are counted, not logged): %(body)s"
            log.warning(message, {"n": len(items), "status": status, "body": body[:500]})

    def _unavailable(
        self, gen: int, items: list[OutboxItem], status: int | None, error: str, retry_after: float | None
    ) -> None:
        """A retryable failure: the gate backs off for the endpoint, and each scan for itself."""
        was_closed = self._gate.is_closed
        self._gate.failure(gen, retry_after)
        if was_closed and not self._gate.is_closed:  # this failure opened the gate
            self.stats.endpoint_up = False
            reason = f"HTTP {status}" if status else error
            log.warning("ingest unavailable (%s); scans stay in the outbox and are retried", reason)
        self._retry(items, status, error, retry_after)

    async def _sender(self, lane: _Lane) -> None:
        """Sends a device's queue, with up to ``concurrency`` requests in flight."""
        cfg = self.config
        slots = asyncio.Semaphore(cfg.concurrency)
        while True:
            while not lane.queue:
                await lane.wait()
            if cfg.mode == "batch":  # a batch leaves when full or when its oldest scan waited long enough
                deadline = lane.queue[0][1] + cfg.batch_interval_s
                # when generation is over nothing more is coming: send what is queued without waiting
                while len(lane.queue) < lane.max_batch and self._generating and time.monotonic() < deadline:
                    await lane.wait(deadline - time.monotonic())
            await slots.acquire()
            if cfg.mode == "batch":
                batch, size = True, lane.max_batch
            else:  # one request per scan, but a backlog (e.g. after an outage) is caught up in batches
                batch = cfg.catch_up_batch > 1 and len(lane.queue) > cfg.concurrency
                size = min(cfg.catch_up_batch, lane.max_batch) if batch else 1
            task = self._spawn(self._send(lane, lane.take(size), batch=batch), "send")
            task.add_done_callback(lambda _t: slots.release())

    async def _send(self, lane: _Lane, items: list[OutboxItem], *, batch: bool) -> None:
        """POST one scan or a batch, through the endpoint gate, and buffer the outcome of each scan."""
        assert self._session is not None
        path = names.ROUTE_BATCH if batch else names.ROUTE_SCAN
        body = encode_batch([i.scan for i in items]) if batch else encode_scan(items[0].scan)
        gen = await self._gate.acquire()
        try:
            self.stats.requests += 1
            async with self._session.post(self._base + path, data=body, allow_redirects=False) as resp:
                status, payload = resp.status, await resp.read()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._unavailable(gen, items, None, f"{type(exc).__name__}: {exc}", None)
            return
        except asyncio.CancelledError:
            self._gate.abandon(gen)
            raise
        if is_retryable(status):
            self._unavailable(
                gen, items, status, f"HTTP {status}: {payload[:_MAX_BODY_IN_ERROR]!r}", retry_after
            )
            return
        if self._gate.success():
            log.info("ingest reachable again")
            self.stats.endpoint_up = True
        if status >= 300:
            self._refused(lane, items, status, payload)
            return
        failed = failed_indices(payload, len(items)) if batch else set()
        if failed is None and status == 207:  # partial success we cannot decode: resend all (dedup'd)
            self._retry(items, status, "unreadable 207 body", None)
            return
        failed = failed or set()
        self._outcomes.extend(
            Outcome(it.seq, State.ACKED, status) for i, it in enumerate(items) if i not in failed
        )
        self._retry((items[i] for i in sorted(failed)), status, "not confirmed (failedIndices)", None)

    def _refused(self, lane: _Lane, items: list[OutboxItem], status: int, payload: bytes) -> None:
        """A 4xx: drop only the scan a batch's answer blames, resend the innocent rest."""
        text = payload[:_MAX_BODY_IN_ERROR].decode("utf-8", "replace")
        if status == 413 and len(items) > 1:
            lane.max_batch = max(1, len(items) // 2)
            log.warning(
                "ingest answered 413 to a batch of %d; batches are now %d", len(items), lane.max_batch
            )
            lane.push(items, front=True)
            return
        index: int | None = None
        with contextlib.suppress(orjson.JSONDecodeError):
            index = _find_index(orjson.loads(payload))
        if index is not None and 0 <= index < len(items) and len(items) > 1:
            self._reject([items[index]], status, text)
            lane.push(items[:index] + items[index + 1 :], front=True)
            return
        self._reject(items, status, text)
