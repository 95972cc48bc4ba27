"""Open-loop load generator: a constant arrival rate, HDR latency percentiles, errors, a time series.

Open loop: request k is due at ``start + k / rate`` whether or not earlier ones returned, and its latency
counts from that *scheduled* instant, so a slow server cannot hide its slowness by slowing the client
(no coordinated omission); service time and the pacer's lateness tell server and client cost apart.
``processes=N`` splits the rate over N processes (interleaved schedules, one start instant) and merges
their HDR histograms exactly. Acknowledged scan IDs can go to a file, to check acknowledged == stored.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import multiprocessing
import os
import secrets
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import uvloop

from barcode_harness.bench import procstats
from barcode_harness.bench.histogram import LatencyHistogram, LatencySummary, SecondPoint, TimeSeries
from barcode_harness.bench.httpclient import AiohttpClient, RawHttpClient, Request, Target, pace
from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_harness.scanner.scans import (
    SEEDED_DEVICES,
    ScanFactory,
    counter_scan_ids,
    encode_batch,
    encode_scan,
)
from barcode_harness.scanner.simulator import failed_indices
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

Mode = Literal["single", "batch"]
ClientKind = Literal["raw", "aiohttp"]
UNFINISHED = "unfinished"  # still unanswered when the drain time ran out
SATURATED_CPU = 0.9  # a worker process busy this share of the run has no headroom left
SATURATED_LAG_MS = 5.0  # pacer lateness p99 above this: requests left late because the loop was busy


class BodyFactory(Protocol):
    """Makes request bodies; returns the body and the scan IDs it carries (to record acknowledgements)."""

    def make(self) -> tuple[bytes, list[str]]: ...


# (spec, worker index, worker count, run token) -> factory; must be picklable when processes > 1
BodyFactoryMaker = Callable[["LoadSpec", int, int, str], BodyFactory]


@dataclass(frozen=True)
class LoadSpec:
    """One load run. ``rate`` is requests/s over all processes (a batch request carries batch_size scans)."""

    url: str
    rate: float
    duration_s: float
    concurrency_limit: int = 512  # connections = requests in flight, over all processes
    mode: Mode = "single"
    batch_size: int = 100
    processes: int = 1
    client: ClientKind = "raw"
    devices: tuple[str, ...] = SEEDED_DEVICES
    duplicate_ratio: float = 0.0
    itf14_ratio: float = 0.3
    timeout_s: float = 10.0
    path: str | None = None  # default: /ingest/barcode or /ingest/barcodes by mode
    acked_ids_path: Path | None = None  # one acknowledged scanId per line
    body_factory: BodyFactoryMaker | None = None
    warm_connections: int = 8  # per process, opened before the clock starts
    use_uvloop: bool = True
    api_key: str = ""  # sent as Authorization: Bearer (ingest requires a key unless BP_INGEST_AUTH=off)
    window_s: int = 0  # > 0: the result also keeps the series in windows this wide, histograms included

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.rate > 0, "rate must be > 0"),
            (self.duration_s > 0, "duration_s must be > 0"),
            (self.processes >= 1, "processes must be >= 1"),
            (self.concurrency_limit >= self.processes, "concurrency_limit must be >= processes"),
            (self.mode in ("single", "batch"), "mode is single or batch"),
            (self.client in ("raw", "aiohttp"), "client is raw or aiohttp"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (0 <= self.duplicate_ratio < 1, "duplicate_ratio must be in [0, 1)"),
            (self.timeout_s > 0, "timeout_s must be > 0"),
            (bool(self.devices), "at least one device"),
            (self.window_s >= 0, "window_s must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message, component="loadgen")

    @property
    def endpoint(self) -> str:
        return self.path or (names.ROUTE_BATCH if self.mode == "batch" else names.ROUTE_SCAN)

    @property
    def scans_per_request(self) -> int:
        return self.batch_size if self.mode == "batch" else 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["acked_ids_path"] = str(self.acked_ids_path) if self.acked_ids_path else None
        out["endpoint"] = self.endpoint
        out["body_factory"] = getattr(self.body_factory, "__qualname__", None)
        out["api_key"] = "***" if self.api_key else ""  # results are written to disk: never the secret
        return out


class ScanBodies:
    """Default bodies: valid scans; scan IDs and barcodes unique over all processes and runs."""

    def __init__(self, spec: LoadSpec, worker: int, workers: int, token: str) -> None:
        seed = int(token, 16)
        self._factory = ScanFactory(
            spec.devices,
            barcodes=BarcodeFactory(seed=seed, stream=worker, streams=workers, itf14_ratio=spec.itf14_ratio),
            scan_ids=counter_scan_ids(f"lg-{token}-{worker}-"),
            duplicate_ratio=spec.duplicate_ratio,
            seed=seed + worker,
        )
        self._batch = spec.batch_size if spec.mode == "batch" else 0

    def make(self) -> tuple[bytes, list[str]]:
        if not self._batch:
            scan = self._factory.next()
            return encode_scan(scan), [scan.scan_id]
        scans = [self._factory.next() for _ in range(self._batch)]
        return encode_batch(scans), [s.scan_id for s in scans]


def schedule_count(rate: float, duration_s: float, processes: int = 1, index: int = 0) -> int:
    """How many requests worker ``index`` of ``processes`` sends: global request j is due at j / rate for
    every j / rate < duration, and worker i owns j = k * processes + i."""
    total = math.ceil(rate * duration_s - 1e-9)
    return max(0, (total - index + processes - 1) // processes)


def scheduled_offset(k: int, rate: float, processes: int = 1, index: int = 0) -> float:
    """Seconds after the start at which worker ``index``'s k-th request is due."""
    return (k * processes + index) / rate


@dataclass(kw_only=True)
class Tally:
    """The counts of a run: each worker process keeps its own, the result holds their sums."""

    scheduled: int = 0
    sent: int = 0
    responses: int = 0
    failures: int = 0  # no HTTP answer: connect errors, disconnects, timeouts, unfinished
    ok: int = 0  # 2xx answers
    scans_sent: int = 0
    scans_acked: int = 0
    scans_acked_unique: int = 0
    connections_opened: int = 0


@dataclass
class WorkerResult:
    """One worker process's share, histograms encoded so that it crosses process boundaries."""

    tally: Tally
    status_counts: dict[str, int]
    latency_hdr: str
    service_hdr: str
    lag_hdr: str
    series: list[tuple[int, int, int, int, str]]
    start_wall: float
    last_done_s: float  # last answer, seconds after the start
    cpu_s: float  # CPU time this process used from the start to the end of the drain
    precise_pacer: bool


@dataclass
class LoadResult(Tally):
    """The merged outcome of a run; :meth:`to_dict` is the JSON reports store."""

    spec: LoadSpec
    started_at: float  # wall clock (epoch s) of the first scheduled request
    status_counts: dict[str, int]
    latency: LatencySummary  # scheduled instant -> answer (what a client at this arrival rate sees)
    service_time: LatencySummary  # request written -> answer
    dispatch_lag: LatencySummary  # scheduled instant -> handed to the client (the generator's lateness)
    timeseries: list[SecondPoint]
    elapsed_s: float  # start -> last answer
    achieved_rps: float  # answers / max(duration, elapsed)
    client_cpu: list[float]  # per process: CPU seconds / elapsed (1.0 = one core saturated)
    client_cpu_us_per_request: float  # the generator's CPU cost per request, robust to other load
    precise_pacer: bool
    machine: dict[str, Any]  # procstats.machine() when the run began: was the machine quiet?
    machine_cpu_busy: float | None = None  # share of all cores busy during the run (anyone's work), Linux
    latency_hdr: str = field(repr=False, default="")
    service_hdr: str = field(repr=False, default="")
    # spec.window_s wide buckets, encoded as TimeSeries.encode does (mergeable across loads)
    windows: list[tuple[int, int, int, int, str]] = field(repr=False, default_factory=list)

    @property
    def errors(self) -> int:
        """Everything that is not a 2xx answer."""
        return self.scheduled - self.ok

    @property
    def error_rate(self) -> float:
        return self.errors / self.scheduled if self.scheduled else 0.0

    @property
    def generator_saturated(self) -> bool:
        """The generator fell behind (a busy core or a late pacer): its figures include its own queueing."""
        return (
            max(self.client_cpu, default=0.0) > SATURATED_CPU or self.dispatch_lag.p99_ms > SATURATED_LAG_MS
        )

    def sustained(self, max_p99_ms: float = 50.0, max_error_rate: float = 0.0) -> bool:
        """Kept up: (almost) every request answered on time, errors within bounds, p99 bounded."""
        return (
            self.achieved_rps >= 0.99 * self.spec.rate
            and self.error_rate <= max_error_rate
            and self.latency.p99_ms <= max_p99_ms
        )

    def to_dict(self, *, with_histograms: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "machine": self.machine,
            "started_at": self.started_at,
            **{f.name: getattr(self, f.name) for f in fields(Tally)},
            "errors": self.errors,
            "error_rate": self.error_rate,
            "status_counts": self.status_counts,
            **{f"{k}_ms": getattr(self, k).to_dict() for k in ("latency", "service_time", "dispatch_lag")},
            "elapsed_s": round(self.elapsed_s, 3),
            "achieved_rps": round(self.achieved_rps, 1),
            "client_cpu": [round(c, 3) for c in self.client_cpu],
            "client_cpu_us_per_request": round(self.client_cpu_us_per_request, 1),
            "precise_pacer": self.precise_pacer,
            "generator_saturated": self.generator_saturated,
            "machine_cpu_busy": None if self.machine_cpu_busy is None else round(self.machine_cpu_busy, 3),
            "loadavg_at_start": float(self.machine["load_average_at_start"][0]),  # 1-min
            "acked_ids_path": str(self.spec.acked_ids_path) if self.spec.acked_ids_path else None,
            "timeseries": [p.to_dict() for p in self.timeseries],
        }
        if with_histograms:
            out["hdr"] = {"latency_us": self.latency_hdr, "service_time_us": self.service_hdr}
        return out


def _ack_part(path: Path, index: int) -> Path:
    """Where worker ``index`` writes its acknowledged scan IDs, until the merge joins the parts."""
    return path.with_name(f"{path.name}.part{index}")


class _Worker:
    """One process's share of the schedule; receives every request's outcome (the client's Sink)."""

    def __init__(self, spec: LoadSpec, index: int, token: str) -> None:
        self.spec = spec
        self.index = index
        self.n = schedule_count(spec.rate, spec.duration_s, spec.processes, index)
        self.k = 0
        self.t0 = 0.0
        maker = spec.body_factory or ScanBodies
        self.bodies: BodyFactory = maker(spec, index, spec.processes, token)
        self.latency = LatencyHistogram()
        self.service = LatencyHistogram()
        self.lag = LatencyHistogram()
        self.series = TimeSeries()
        self.status: Counter[int | str] = Counter()
        self.tally = Tally(scheduled=self.n)
        self.last_done = 0.0
        self._unique: set[str] | None = set() if spec.duplicate_ratio > 0 else None
        self._ack_file: IO[str] | None = None
        if spec.acked_ids_path is not None:
            ack_part = _ack_part(spec.acked_ids_path, index)
            ack_part.parent.mkdir(parents=True, exist_ok=True)
            self._ack_file = open(ack_part, "w", buffering=1 << 16)  # noqa: SIM115 - closed in run()
        per_process = max(1, spec.concurrency_limit // spec.processes)
        client_cls = RawHttpClient if spec.client == "raw" else AiohttpClient
        target = Target(spec.url, spec.endpoint, per_process, spec.timeout_s, keep_body=spec.mode == "batch",
                        headers=client_headers(spec.api_key))  # fmt: skip
        self.client: RawHttpClient | AiohttpClient = client_cls(target, self)

    # pacer callback: send everything due, return when the next request is due
    def fire(self, now: float) -> float | None:
        rate, step, index, t0, n, k = self.spec.rate, self.spec.processes, self.index, self.t0, self.n, self.k
        tally = self.tally
        while k < n:
            due = t0 + (k * step + index) / rate
            if due > now:
                self.k = k
                return due
            body, ids = self.bodies.make()
            self.lag.record_us(int((now - due) * 1_000_000))
            tally.sent += 1
            tally.scans_sent += len(ids)
            self.client.submit(Request(due, body, ids))
            k += 1
        self.k = k
        return None

    # Sink
    def on_response(self, req: Request, status: int, body: bytes, done: float) -> None:
        latency_us = int((done - req.intended) * 1_000_000)
        self.latency.record_us(latency_us)
        self.service.record_us(int((done - req.sent) * 1_000_000))
        ok = 200 <= status < 300
        self.series.record(int(req.intended - self.t0), latency_us, ok)
        self.status[status] += 1
        self.tally.responses += 1
        self.last_done = max(self.last_done, done)
        if ok:
            self.tally.ok += 1
            self._acked(req, status, body)

    def on_failure(self, req: Request, kind: str, done: float) -> None:
        self.series.error(int(req.intended - self.t0))
        self.status[kind] += 1
        self.tally.failures += 1
        self.last_done = max(self.last_done, done)

    def _acked(self, req: Request, status: int, body: bytes) -> None:
        ids = req.scan_ids
        if status == 207 or (status == 200 and len(ids) > 1):  # batch answers name what failed
            failed = failed_indices(body, len(ids), strict=False)
            if failed:
                ids = [sid for i, sid in enumerate(ids) if i not in failed]
            elif failed is None and status == 207:
                return  # partial success we cannot read: claim nothing
        self.tally.scans_acked += len(ids)
        if self._unique is not None:
            self._unique.update(ids)
        if self._ack_file is not None:
            self._ack_file.write("\n".join(ids))
            self._ack_file.write("\n")

    async def run(self, wait_for_start: Callable[[], Any] | None) -> WorkerResult:
        spec, tally = self.spec, self.tally
        await self.client.start(spec.warm_connections)
        # everything allocated so far lives for the whole run: keep the cyclic GC from rescanning it
        gc.collect()
        gc.freeze()
        try:
            start_wall = await wait_for_start() if wait_for_start is not None else time.time() + 0.05
            self.t0 = time.monotonic() + (start_wall - time.time())
            cpu0 = time.process_time()
            precise = await pace(
                self.fire, self.t0 + scheduled_offset(0, spec.rate, spec.processes, self.index)
            )
            deadline = time.monotonic() + spec.timeout_s + 1.0
            while self.client.busy and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            self.client.abandon_all(UNFINISHED)
            cpu = time.process_time() - cpu0
        finally:
            gc.unfreeze()
            await self.client.close()
            if self._ack_file is not None:
                self._ack_file.close()
        tally.scans_acked_unique = len(self._unique) if self._unique is not None else tally.scans_acked
        tally.connections_opened = self.client.connections_opened
        return WorkerResult(
            tally=tally,
            status_counts={str(k): v for k, v in self.status.items()},
            latency_hdr=self.latency.encode(),
            service_hdr=self.service.encode(),
            lag_hdr=self.lag.encode(),
            series=self.series.encode(),
            start_wall=start_wall,
            last_done_s=max(0.0, self.last_done - self.t0),
            cpu_s=cpu,
            precise_pacer=precise,
        )


def _run_worker(spec: LoadSpec, index: int, token: str, start: Callable[[], Any] | None) -> WorkerResult:
    new_loop = uvloop.new_event_loop if spec.use_uvloop else asyncio.new_event_loop
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(_Worker(spec, index, token).run(start))
    except BaseException:
        if _shared[0] is not None:  # the parent and the other workers stop waiting for this one at once
            _shared[0].abort()
        raise


_shared: tuple[Any, Any] = (None, None)  # a worker process's (barrier, start instant), from _init_process


def _init_process(barrier: Any, start: Any) -> None:
    global _shared
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(processName)s %(levelname)s %(message)s")
    _shared = (barrier, start)


async def _wait_for_start() -> float:
    """In a worker process: all prepared; then the parent has set the start instant."""
    for _ in range(2):
        await asyncio.to_thread(_shared[0].wait, 120)
    return float(_shared[1].value)


def _run_processes(spec: LoadSpec, token: str) -> list[WorkerResult]:
    """One worker per pool process: a worker blocks at the barrier, so no process can take two."""
    ctx = multiprocessing.get_context("spawn")
    barrier, start = ctx.Barrier(spec.processes + 1), ctx.Value("d", 0.0)
    with ctx.Pool(spec.processes, _init_process, (barrier, start)) as pool:  # leaving it kills the workers
        args = [(spec, i, token, _wait_for_start) for i in range(spec.processes)]
        # A task that cannot even be sent (say, an unpicklable body factory) reaches no worker: abort here.
        parts = pool.starmap_async(_run_worker, args, chunksize=1, error_callback=lambda _: barrier.abort())
        try:
            barrier.wait(120)
            start.value = time.time() + 0.1
            barrier.wait(60)
        except Exception as exc:  # BrokenBarrierError: a worker failed while starting, or timed out
            cause = _failure(parts) or exc
            raise PipelineError(f"a load worker failed to start: {cause!r}", component="loadgen") from cause
        try:
            return parts.get(timeout=spec.duration_s + spec.timeout_s + 120)
        except Exception as exc:  # its own traceback is chained
            raise PipelineError(f"a load worker failed: {exc!r}", component="loadgen") from exc


def _failure(parts: Any, wait_s: float = 5.0) -> BaseException | None:
    """The workers' first error, if they report one within ``wait_s`` (an aborted barrier's cause)."""
    try:
        parts.get(wait_s)
    except multiprocessing.TimeoutError:
        return None
    except BaseException as exc:
        return exc
    return None


def _merge(spec: LoadSpec, parts: list[WorkerResult], machine: dict[str, Any]) -> LoadResult:
    status: Counter[str] = Counter()
    series = TimeSeries()
    for part in parts:
        status.update(part.status_counts)
        series.add_encoded(part.series)
    if spec.acked_ids_path is not None:
        with open(spec.acked_ids_path, "wb") as out:
            for index in range(len(parts)):  # the pool returns the workers' results in their order
                with open(_ack_part(spec.acked_ids_path, index), "rb") as src:
                    shutil.copyfileobj(src, out)
                os.unlink(src.name)
    latency = LatencyHistogram.merged(p.latency_hdr for p in parts)
    service = LatencyHistogram.merged(p.service_hdr for p in parts)
    tally: dict[str, Any] = {f.name: sum(getattr(p.tally, f.name) for p in parts) for f in fields(Tally)}
    elapsed = max(p.last_done_s for p in parts)
    window = max(spec.duration_s, elapsed)
    return LoadResult(
        **tally,
        spec=spec,
        started_at=parts[0].start_wall,
        status_counts=dict(sorted(status.items())),
        latency=latency.summary(),
        service_time=service.summary(),
        dispatch_lag=LatencyHistogram.merged(p.lag_hdr for p in parts).summary(),
        timeseries=series.points(math.ceil(spec.duration_s)),
        elapsed_s=elapsed,
        achieved_rps=tally["responses"] / window,
        client_cpu=[p.cpu_s / window for p in parts],
        client_cpu_us_per_request=sum(p.cpu_s for p in parts) / max(1, tally["sent"]) * 1e6,
        precise_pacer=all(p.precise_pacer for p in parts),
        machine=machine,
        latency_hdr=latency.encode(),
        service_hdr=service.encode(),
        windows=series.coarse(spec.window_s).encode() if spec.window_s else [],
    )


def run_load(spec: LoadSpec) -> LoadResult:
    """Run one open-loop load and return the merged result (blocking).

    With ``processes == 1`` the load runs on a fresh event loop in the calling thread (which must
    not be running one); otherwise in ``processes`` spawned worker processes.
    """
    token = secrets.token_hex(4)
    machine = procstats.machine()
    cpu_before = procstats.machine_ticks()
    parts = [_run_worker(spec, 0, token, None)] if spec.processes == 1 else _run_processes(spec, token)
    result = _merge(spec, parts, machine)
    result.machine_cpu_busy = procstats.busy_share(cpu_before, procstats.machine_ticks())
    lat = result.latency
    log.info(
        "load %s %.0f req/s x %.1f s: %d ok, %d errors, p50 %.2f ms p99 %.2f ms max %.2f ms",
        spec.url, spec.rate, spec.duration_s, result.ok, result.errors, lat.p50_ms, lat.p99_ms, lat.max_ms,
    )  # fmt: skip
    if result.generator_saturated:
        log.warning(
            "the load generator fell behind its schedule (CPU %s, pacer lag p99 %.2f ms): its process is "
            "saturated or the cores are busy with other work; latencies include that client-side delay",
            ", ".join(f"{c:.0%}" for c in result.client_cpu),
            result.dispatch_lag.p99_ms,
        )
    return result
