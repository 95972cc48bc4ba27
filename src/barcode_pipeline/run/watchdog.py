"""Liveness watchdog: restart a processor or worker that has work waiting and moves none.

A process check sees a blocked loop as healthy. Each processor and worker writes its progress to a
file (``liveness.py``); every few seconds the supervisor reads those files and the backlog of each
service's stage:

- a processor's backlog is the committed lag of the partitions it holds (a processor that holds
  none answers for the partitions nobody holds);
- a worker's backlog is the entries it holds unacknowledged plus the entries no worker has read.

A service is *stalled* once its backlog has been non-zero for ``BP_STALL_TIMEOUT_S`` and in that
time its loop neither moved work, nor found nothing waiting for it, nor retried a dependency that
was down, nor was inside a call still within its own timeouts (a database write to a frozen server:
a restart would not bring a dependency back; such a service is reported as *waiting*).

Before restarting a stalled service the supervisor sends it SIGUSR1, so faulthandler prints every
thread's stack to the log; then it stops it (SIGTERM, SIGKILL after a grace) and starts it again.
Unknown backlog (Kafka or Redis not answering) never counts as a stall.

Visible: ``watchdog.json`` next to the progress files (``barcode-pipeline status`` shows it), the
supervisor's ``/health`` (503 while a service is stalled; ``/health/<name>`` per service, for a
systemd or Kubernetes probe) and ``/metrics`` (``bp_watchdog_restarts_total``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import asdict, dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Protocol

import orjson
import redis
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry, Counter, Gauge

from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.liveness import STACK_DUMP_SIGNAL, progress_dir, read_progress
from barcode_pipeline.probes.backlog import Backlog, kafka_lag, redis_backlog
from barcode_pipeline.web.sideport import Route, serve_side_port

log = logging.getLogger(__name__)


class WatchedSpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> names.Role: ...

    @property
    def watched(self) -> bool: ...  # it writes a progress file


class Watched(Protocol):
    """A supervised child as the watchdog sees it (run/supervisor.Child); read-only."""

    @property
    def spec(self) -> WatchedSpec: ...

    @property
    def held(self) -> bool: ...  # drained, paused or already taken over: not ours to judge

    @property
    def pid(self) -> int | None: ...

    def alive(self) -> bool: ...

    def signal(self, signum: int) -> None: ...

    def wait(self, timeout: float) -> bool: ...


class Supervised(Protocol):
    """The supervisor as the watchdog uses it: its children, and a restart it carries out itself."""

    @property
    def children(self) -> Mapping[str, Watched]: ...

    def take_over(self, child: Watched, stop: Callable[[], None]) -> bool:
        """Run ``stop`` (which ends the child) with the supervisor's own restarts held off, then start
        the child again; False when the supervisor is stopping (the child stays down)."""
        ...


STATE_FILE = "watchdog.json"

# A service without a record yet is still starting (imports, first connections): it gets this
# long on top of the stall timeout before its silence counts, so a slow start is not a stall.
STARTUP_GRACE_S = 60.0


class WatchdogMetrics:
    """The watchdog's own registry: one per supervisor, so two supervisors in a process never mix."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.restarts = Counter(
            "bp_watchdog_restarts_total",
            "Services restarted by the liveness watchdog (work waiting, no progress)",
            ["service"],
            registry=self.registry,
        )
        self.stalled = Gauge(
            "bp_watchdog_stalled", "1 while the service is stalled", ["service"], registry=self.registry
        )


@dataclass
class Verdict:
    """One service as the watchdog last saw it."""

    service: str
    state: str  # ok | stalled | waiting (on a dependency) | unknown (backlog not measurable) | down
    backlog: int | None = None
    quiet_s: float | None = None  # seconds with work waiting and no progress
    restarts: int = 0
    pid: int | None = None


def service_backlogs(
    services: Mapping[str, dict[str, Any] | None],
    processors: Set[str],
    lag: Mapping[int, int] | None,
    redis_state: Backlog | None,
    node: str | None = None,
) -> dict[str, int | None]:
    """Work waiting for each service (None: not measurable now). ``services`` maps names to records,
    ``processors`` names the processors among them (the rest are workers); ``node``: the workers'
    consumer names carry it (supervisor.pipeline_specs)."""
    held: set[int] = set()
    for name, record in services.items():
        if name in processors and record and record.get("partitions"):
            held.update(record["partitions"])
    undelivered = sum(redis_state.stream_undelivered.values()) if redis_state else 0
    out: dict[str, int | None] = {}
    for name, record in services.items():
        if name in processors:
            if lag is None:
                out[name] = None
                continue
            mine = (record or {}).get("partitions") or [p for p in lag if p not in held]
            out[name] = sum(lag.get(p, 0) for p in mine)
        else:
            if redis_state is None:
                out[name] = None
                continue
            consumer = names.node_member(node, name) if node else name
            out[name] = redis_state.pending_by_consumer.get(consumer, 0) + undelivered
    return out


def quiet_seconds(
    now: float,
    backlog: int | None,
    backlog_since: float | None,
    record: dict[str, Any] | None,
    started: float,
) -> float | None:
    """Seconds the service has had work waiting without a sign of progress (None: nothing waits)."""
    if not backlog or backlog_since is None:
        return None
    signs = [backlog_since, started]
    if record:
        signs += [float(record.get(k) or 0) for k in ("moved_at", "idle_at", "waiting_at")]
        signs.append(min(now, float(record.get("busy_until") or 0)))  # inside a bounded call
    return max(0.0, now - max(signs))


def waits_on_a_dependency(now: float, record: dict[str, Any] | None) -> bool:
    """The loop's latest sign is a retry of a server that is down, or a bounded call still running."""
    if not record:
        return False
    if float(record.get("busy_until") or 0) > now:
        return True
    waiting = float(record.get("waiting_at") or 0)
    return waiting > 0 and waiting >= max(float(record.get(k) or 0) for k in ("moved_at", "idle_at"))


class Watchdog:
    """The supervisor's liveness check, on its own thread (measuring may take seconds)."""

    def __init__(
        self,
        supervisor: Supervised,
        settings: Settings,
        *,
        grace_s: float = 5.0,
        dump_wait_s: float = 1.0,
        health_port: int | None = None,
    ) -> None:
        self.sup = supervisor
        self.settings = settings
        self.timeout_s = settings.monitoring.stall_timeout_s
        self.interval_s = min(5.0, max(0.5, self.timeout_s / 6))
        self.grace_s = grace_s
        self.dump_wait_s = dump_wait_s
        self.dir = progress_dir(settings.state_dir)
        self.verdicts: dict[str, Verdict] = {}
        self._since: dict[str, float] = {}  # service -> when its backlog was first seen (continuously)
        self._started: dict[str, tuple[int, float]] = {}  # service -> (pid, first seen)
        self._restarts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="liveness-watchdog")
        self._redis = redis_adapter.client(settings)
        self._server: ThreadingHTTPServer | None = None
        self._health_port = health_port
        self.metrics = WatchdogMetrics()
        self.startup_grace_s = STARTUP_GRACE_S

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in self._watched():  # a series at 0 from the start: alerts and panels see the metric
            self.metrics.restarts.labels(name)
            self.metrics.stalled.labels(name).set(0)
        if self._health_port:
            try:
                self._server = serve_side_port(
                    self._health_port, registry=self.metrics.registry, routes=[health_routes(self.health)]
                )
            except OSError as exc:  # the pipeline matters more than its probe endpoint
                log.error("cannot serve health and metrics on port %d: %s", self._health_port, exc)
            else:
                log.info("supervisor health and metrics on 127.0.0.1:%d", self._health_port)
        if self.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._redis.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the watchdog must outlive any surprise in one round
                log.exception("watchdog round failed")

    # ------------------------------------------------------------------ one round
    def _watched(self) -> dict[str, Watched]:
        return {n: c for n, c in self.sup.children.items() if c.spec.watched}  # others write no progress

    def check(self) -> list[str]:
        """One round: measure, judge, restart the stalled; returns the names restarted."""
        now = time.time()
        children = self._watched()
        records: dict[str, dict[str, Any] | None] = {}
        for name, child in children.items():
            record = read_progress(self.dir / f"{name}.json")
            records[name] = record if record and child.pid and record.get("pid") == child.pid else None
            if child.pid and self._started.get(name, (None, 0.0))[0] != child.pid:
                self._started[name] = (child.pid, now)
                self._since.pop(name, None)
        processors = {name for name, child in children.items() if child.spec.role is names.Role.PROCESSOR}
        backlogs = service_backlogs(
            records, processors, self._lag(), self._redis_state(), self.settings.node_name
        )
        restarted: list[str] = []
        verdicts: dict[str, Verdict] = {}
        for name, child in children.items():
            backlog = backlogs.get(name)
            if not backlog:
                self._since.pop(name, None)
            else:
                self._since.setdefault(name, now)
            quiet = quiet_seconds(
                now, backlog, self._since.get(name), records[name], self._started.get(name, (0, now))[1]
            )
            limit = self.timeout_s + (0.0 if records[name] else self.startup_grace_s)  # still starting?
            if not child.alive():
                state = "down"
            elif backlog is None:
                state = "unknown"
            elif quiet is not None and quiet >= limit:
                state = "stalled"
            elif backlog and waits_on_a_dependency(now, records[name]):
                state = "waiting"
            else:
                state = "ok"
            verdicts[name] = Verdict(
                name, state, backlog, None if quiet is None else round(quiet, 1),
                self._restarts.get(name, 0), child.pid,
            )  # fmt: skip
            self.metrics.stalled.labels(name).set(1 if state == "stalled" else 0)
            if state == "stalled" and not child.held:
                restarted.append(name)
        self.verdicts = verdicts  # one assignment: the health thread never sees a half-built round
        self._write_state()
        for name in restarted:
            self._restart(children[name], self.verdicts[name])
        return restarted

    def _lag(self) -> dict[int, int] | None:
        try:
            lag = kafka_lag(self.settings)
        except KafkaException as exc:
            log.debug("watchdog: kafka lag not measurable: %s", exc)
            return None
        return lag or None  # no topic metadata: not measurable

    def _redis_state(self) -> Backlog | None:
        state = Backlog()
        try:
            redis_backlog(self.settings, state, self._redis)
        except redis.RedisError as exc:
            log.debug("watchdog: redis backlog not measurable: %s", exc)
            return None
        return state

    def _restart(self, child: Watched, verdict: Verdict) -> None:
        name = child.spec.name
        if self._stop.is_set():
            return
        log.error(
            "watchdog: %s (pid %s) stalled: %s waiting, no progress for %.0fs; dumping its threads, "
            "then restarting it",
            name, child.pid, verdict.backlog, verdict.quiet_s or 0,
        )  # fmt: skip

        def stop() -> None:
            child.signal(STACK_DUMP_SIGNAL)
            self._stop.wait(self.dump_wait_s)  # faulthandler writes at once; the pump needs a moment
            child.signal(signal.SIGTERM)
            if not child.wait(self.grace_s):
                child.signal(signal.SIGKILL)
                child.wait(5)

        if not self.sup.take_over(child, stop):
            return
        self._restarts[name] = self._restarts.get(name, 0) + 1
        self.metrics.restarts.labels(name).inc()
        self._since.pop(name, None)
        fresh = Verdict(name, "ok", restarts=self._restarts[name], pid=child.pid)  # until the next round
        self.verdicts = {**self.verdicts, name: fresh}
        self.metrics.stalled.labels(name).set(0)
        log.warning("watchdog: %s restarted (pid %s)", name, child.pid)

    # ------------------------------------------------------------------ reporting
    def health(self) -> dict[str, Any]:
        verdicts = self.verdicts  # the last round's, whole
        services = {name: asdict(v) for name, v in verdicts.items()}
        stalled = sorted(n for n, v in verdicts.items() if v.state == "stalled")
        return {
            "status": "stalled" if stalled else "ok",
            "stalled": stalled,
            "stall_timeout_s": self.timeout_s,
            "checked_at": time.time(),
            "services": services,
        }

    def _write_state(self) -> None:
        path = self.dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        try:
            tmp.write_bytes(orjson.dumps({**self.health(), "interval_s": self.interval_s}))
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)


def read_state(settings: Settings) -> dict[str, Any] | None:
    """The supervisor's last verdicts, if a supervisor wrote them recently (for ``status``)."""
    state = read_progress(progress_dir(settings.state_dir) / STATE_FILE)
    if not state:
        return None
    fresh_s = 3 * float(state.get("interval_s", 5.0)) + 10.0
    return state if time.time() - float(state.get("checked_at", 0)) <= fresh_s else None


def health_routes(health: Callable[[], dict[str, Any]]) -> Route:
    """``GET /health`` (all services; 503 while one is stalled) and ``GET /health/<name>`` (one)."""

    def route(path: str) -> tuple[int, Any] | None:
        if path == names.ROUTE_HEALTH:
            report = health()
            return (503 if report["stalled"] else 200), report
        service = path.removeprefix(f"{names.ROUTE_HEALTH}/")
        if service == path:
            return None
        verdict = health()["services"].get(service)
        if verdict is None:
            return None
        return (503 if verdict["state"] in ("stalled", "down") else 200), verdict

    return route
