"""Fault scenarios of the ``ha`` profile (stack/ha.py), run by the single-node harness: one node of a
replicated cluster fails and the pipeline must ride through (new partition leaders, a promoted replica)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, ClassVar, Generic, TypeVar

import redis
from confluent_kafka.admin import AdminClient

from barcode_harness.chaos import faults, scenarios
from barcode_harness.chaos.checks import Ledger, TakeoverProbe, polled, wait_pending, wait_until
from barcode_harness.chaos.context import ChaosContext
from barcode_harness.chaos.scenarios import Scenario, Takeover
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import netns
from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.ha_nodes import HaKafkaNode, HaRedisNode
from barcode_harness.stack.haproxy import HaProxy
from barcode_harness.stack.topology import APP_HOSTS, Topology
from barcode_pipeline import names
from barcode_pipeline.adapters.sentinel import primary_address
from barcode_pipeline.config import settings_env
from barcode_pipeline.errors import PipelineError

FAILOVER_TIMEOUT_S = 60.0
# What a Redis node or HAProxy's socket answers while it restarts or fails over; any other error is a
# bug and surfaces at once. (A Kafka cluster mid-election answers with errors of every kind: those waits
# take any.)
REDIS_DOWN: tuple[type[Exception], ...] = (OSError, redis.RedisError)
REWOUND = re.compile(r"rewound (\d+) records")
log = logging.getLogger(__name__)
N = TypeVar("N", HaKafkaNode, HaRedisNode)


def _ha(ctx: ChaosContext) -> HaStackManager:
    if not isinstance(ctx.stack, HaStackManager):
        raise PipelineError("this scenario needs the ha profile (--profile ha)", component="chaos")
    return ctx.stack


def _failover(ctx: ChaosContext, check: str, ok: bool, took: float, detail: str) -> None:
    ctx.metrics["failover_s"] = round(took, 1)
    ctx.check(check, ok, detail)


def topic_leaders(bootstrap: str, topic: str = names.TOPIC) -> dict[int, int]:
    """Partition -> leader broker id (-1 while a partition has none)."""
    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in meta.topics[topic].partitions.values()}


def active_controller(stack: HaStackManager) -> tuple[int, int]:
    """(leader id, epoch) of the metadata quorum, from the live nodes' quorum-state files."""
    states = [s for s in (k.quorum_state() for k in stack.kafka_nodes() if k.pid() is not None) if s]
    return max(states, key=lambda s: s[1]) if states else (-1, -1)


class HaScenario(Scenario):
    """Base of the ha scenarios: reports how many records the processors re-read after a rewind."""

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        ctx.metrics["rewound"] = ctx.logged_since(f"=== scenario {self.key} {self.name}:", REWOUND)
        super().after_drain(ctx, ledger)


@dataclass(eq=False)
class NodeFault(HaScenario, Generic[N]):
    """One node broken at inject and repaired at heal, ``how``: ``kill``, ``pause`` (SIGSTOP) or ``cut``
    (iptables DROP to its peers; clients still reach it). A killed node's heal only begins its restart
    (a JVM is slow on a loaded machine): the drain clock measures the pipeline; cleanup waits for it."""

    key: str = ""  # defaults only as the base has them: every scenario of ALL names all five
    name: str = ""
    how: str = "kill"
    title: str = ""
    fault: str = ""
    ride_through: bool = field(default=False, kw_only=True)  # check scans were acknowledged before the heal
    node: N | None = field(default=None, init=False)
    _pid: int | None = field(default=None, init=False)
    _restart: threading.Thread | None = field(default=None, init=False)
    _failed_over_ms: int = field(default=0, init=False)
    _healed_ms: int = field(default=0, init=False)

    def pick(self, ctx: ChaosContext, stack: HaStackManager) -> tuple[N, str]:
        """The node to break, and what it is (for the notes)."""
        raise NotImplementedError

    def peers(self, stack: HaStackManager, node: N) -> list[str]:
        """The addresses a ``cut`` drops."""
        raise NotImplementedError

    def failover(self, ctx: ChaosContext, stack: HaStackManager, node: N) -> None:
        """Wait until the cluster took over and check it. Default: nothing has to take over."""

    def rejoin(self, node: N) -> None:
        """Wait until a paused or cut-off node serves again."""
        node.wait_healthy(timeout=120)

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        node, role = self.pick(ctx, stack)
        self.node = node
        if self.how == "kill":
            ctx.note(f"killing {node.name}, {role}")
            node.kill()
            ctx.check(f"{node.name} is down during the hold", node.pid() is None)
        elif self.how == "pause":
            ctx.note(f"pausing {node.name}, {role}")
            self._pid = node.pid()
            if self._pid is not None:
                os.kill(self._pid, signal.SIGSTOP)
        else:
            peers = self.peers(stack, node)
            ctx.note(f"cutting {node.name}, {role}, off from {', '.join(peers)}")
            netns.cut_off(node.net, peers)
        self.failover(ctx, stack, node)
        self._failed_over_ms = int(time.time() * 1000)

    def heal(self, ctx: ChaosContext) -> None:
        self._healed_ms = int(time.time() * 1000)
        if self.node is None:
            return
        if self.how == "kill":
            self._restart = threading.Thread(target=self.node.start, name=f"restart-{self.node.name}")
            self._restart.start()
            return
        if self._pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGCONT)
        if self.how == "cut":
            netns.reconnect(self.node.net)
        self.rejoin(self.node)

    def cleanup(self, ctx: ChaosContext) -> None:
        if self.how != "kill":
            self.heal(ctx)
            return
        if self._restart is not None:
            self._restart.join(timeout=300)
        if self.node is not None:
            self.node.start()

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        """Riding through means answering: an ingest that said 503 from the fault to the heal would
        lose nothing and still have failed."""
        super().after_drain(ctx, ledger)
        if not (self.ride_through and self._failed_over_ms and self._healed_ms):
            return
        acked = len(ctx.load.acknowledged(before_ms=self._healed_ms)) - len(
            ctx.load.acknowledged(before_ms=self._failed_over_ms)
        )
        ctx.metrics["acked_between_failover_and_heal"] = acked
        ctx.check("scans acknowledged between the failover and the heal", acked > 0, f"{acked}")


class KafkaLeaderFault(NodeFault[HaKafkaNode]):
    """A fault on the broker leading most partitions of the event topic: they elect new leaders."""

    CHECKS: ClassVar[dict[str, str]] = {
        "kill": "every partition got a new leader",
        "pause": "the paused broker's partitions got new leaders",
        "cut": "the isolated broker's partitions got new leaders",
    }

    def pick(self, ctx: ChaosContext, stack: HaStackManager) -> tuple[HaKafkaNode, str]:
        victim, led = Counter(topic_leaders(stack.topology.bootstrap).values()).most_common(1)[0]
        return next(k for k in stack.kafka_nodes() if k.node_id == victim), f"leader of {led} partitions"

    def peers(self, stack: HaStackManager, node: HaKafkaNode) -> list[str]:
        return [k.net.ip for k in stack.kafka_nodes() if k is not node]

    def failover(self, ctx: ChaosContext, stack: HaStackManager, node: HaKafkaNode) -> None:
        others = ",".join(k.address for k in stack.kafka_nodes() if k is not node)

        def moved(leaders: dict[int, int]) -> bool:
            return all(leader >= 0 and leader != node.node_id for leader in leaders.values())

        took = polled(lambda: topic_leaders(others), moved, dict[int, int](), FAILOVER_TIMEOUT_S)[1]
        _failover(ctx, self.CHECKS[self.how], took < FAILOVER_TIMEOUT_S, took, f"{took:.1f} s")


class KafkaControllerFault(NodeFault[HaKafkaNode]):
    """A fault on the active KRaft controller: the two other voters elect a new one."""

    def pick(self, ctx: ChaosContext, stack: HaStackManager) -> tuple[HaKafkaNode, str]:
        self.was = active_controller(stack)
        node = next(k for k in stack.kafka_nodes() if k.node_id == self.was[0])
        return node, f"the active controller (epoch {self.was[1]})"

    def failover(self, ctx: ChaosContext, stack: HaStackManager, node: HaKafkaNode) -> None:
        leader, epoch = self.was
        new, took = polled(
            lambda: active_controller(stack),
            lambda n: n[0] not in (leader, -1) and n[1] > epoch,
            self.was,
            FAILOVER_TIMEOUT_S,
        )
        _failover(ctx, "another voter became the active controller", new[0] != leader, took,
                  f"node {leader} -> {new[0]} (epoch {new[1]}) in {took:.1f} s")  # fmt: skip


@dataclass(eq=False)
class RedisFault(NodeFault[HaRedisNode]):
    """A fault on the Redis primary (Sentinel promotes a replica; the old primary rejoins as one),
    or with ``replica`` on one replica (commits wait, as WAIT wants both, until it is back)."""

    replica: bool = field(default=False, kw_only=True)
    old: tuple[str, int] = field(default=("", 0), init=False)

    def pick(self, ctx: ChaosContext, stack: HaStackManager) -> tuple[HaRedisNode, str]:
        self.old = primary_address(ctx.settings)
        if self.replica:
            return next(n for n in stack.redis_nodes() if n.net.ip != self.old[0]), "a replica"
        node = next(n for n in stack.redis_nodes() if n.net.ip == self.old[0])
        return node, f"the primary at {self.old[0]}:{self.old[1]}"

    def peers(self, stack: HaStackManager, node: HaRedisNode) -> list[str]:
        return [n.net.ip for n in stack.redis_nodes() if n is not node] + [
            s.net.ip for s in stack.sentinels()
        ]

    def failover(self, ctx: ChaosContext, stack: HaStackManager, node: HaRedisNode) -> None:
        if self.replica:
            return
        old = self.old
        new, took = polled(
            lambda: primary_address(ctx.settings),
            lambda new: new != old,
            old,
            FAILOVER_TIMEOUT_S,
            errors=REDIS_DOWN,
        )
        _failover(
            ctx, "Sentinel promoted a replica", new != old, took, f"{old[0]} -> {new[0]} in {took:.1f} s"
        )

    def rejoin(self, node: HaRedisNode) -> None:
        """A healed old primary is turned into a replica by the Sentinels; wait for its link."""
        wait_until(
            lambda: "link up" in node.role(),
            FAILOVER_TIMEOUT_S,
            f"{node.name} rejoins as a replica",
            errors=REDIS_DOWN,
        )


class KafkaRollingRestart(HaScenario):
    """Every broker stopped cleanly and restarted, one after the other, under load."""

    key = "h5"
    name = "ha-kafka-rolling-restart"
    title = "Kafka: rolling restart of all 3 brokers (clean stop, start, wait healthy)"
    fault = "each broker in turn stopped cleanly and restarted once the previous one is healthy again"

    def inject(self, ctx: ChaosContext) -> None:
        t0 = time.monotonic()
        for node in _ha(ctx).kafka_nodes():
            node.stop()
            node.start()
            ctx.note(f"{node.name} restarted at {time.monotonic() - t0:.1f} s")
        ctx.metrics["restart_s"] = round(time.monotonic() - t0, 1)

    def hold(self, ctx: ChaosContext) -> None:
        """The restarts are the fault; no extra hold."""


class AppHost:
    """``barcode-pipeline run`` in namespace ``bpapp1``/``bpapp2``, as on a machine of its own (own node
    name, state directory and ingest address), its output prefixed with the node name in ``out``. Its
    ingest answers the balancer only (``admit_only``), so the X-Forwarded-For it believes is HAProxy's."""

    def __init__(self, settings: HarnessSettings, index: int, out: IO[str], *, workers: int = 2) -> None:
        topology = Topology(settings.ha_subnet)
        self.net: netns.NetNode = topology.node("app", index)
        self.balancer = topology.node("lb").ip
        self.node = self.net.name
        self.settings = settings.updated(
            {
                "node_name": self.node,
                "ingest_host": self.net.ip,
                # HAProxy names the client in X-Forwarded-For (after deleting any the client sent)
                "ingest_proxies": self.balancer,
                "workers": workers,
                "state_dir": settings.state_dir.resolve() / "apps" / self.node,
            }
        )
        self.out = out
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        netns.admit_only(self.net, self.settings.ingest.port, self.balancer)
        env = {**os.environ, **settings_env(self.settings), "PYTHONUNBUFFERED": "1"}
        argv = [*self.net.exec_prefix(), sys.executable, "-m", "barcode_pipeline", "run", "--no-stack"]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, start_new_session=True)  # fmt: skip
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True, name=f"pump-{self.node}").start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.out.write(f"[{self.node}] {line}")
            self.out.flush()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Asked from inside the host's namespace: from outside only the balancer gets an answer."""
        url = f"http://{self.net.ip}:{self.settings.ingest.port}{names.ROUTE_READY}"
        call = f"wait_http_ok({url!r}, {timeout!r})"
        probe = f"from barcode_pipeline.run.startup import wait_http_ok; {call}"
        try:
            done = subprocess.run([*self.net.exec_prefix(), sys.executable, "-c", probe], capture_output=True,
                                  text=True, timeout=timeout + 30, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(probe, 1, "", "timed out")
        if done.returncode != 0:
            why = done.stderr.strip().splitlines()[-1:]
            raise PipelineError(f"{self.node} not ready: {' '.join(why)}", component="chaos")

    def kill(self) -> int:
        """SIGKILL of every process in the namespace at once (the machine lost its power)."""
        pids = netns.namespace_pids(self.net)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        return len(pids)

    def stop(self, timeout: float = 60.0) -> None:
        """Clean stop (SIGTERM: ``run`` drains); whatever is left in the namespace is killed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", self.node, timeout)
        self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def group_members(settings: HarnessSettings) -> dict[str, list[int]]:
    """Static member id -> partitions of the event topic, for every member of the processor group."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    group = admin.describe_consumer_groups([settings.processor.group])[settings.processor.group].result(10)
    return {
        m.group_instance_id or m.member_id: sorted(
            p.partition
            for p in (m.assignment.topic_partitions if m.assignment else [])
            if p.topic == names.TOPIC
        )
        for m in group.members
    }


def _prefix(node: str) -> str:
    """What the ids of a node's processors and workers start with."""
    return names.node_member(node, "")


def wait_owners(settings: HarnessSettings, nodes: list[str], timeout: float) -> float:
    """Seconds until every partition is assigned, only to the processors of ``nodes``."""
    prefixes, everyone = tuple(_prefix(n) for n in nodes), list(range(settings.kafka.topic_partitions))

    def settled(members: dict[str, list[int]]) -> bool:
        owned = sorted(p for parts in members.values() for p in parts)
        return all(m.startswith(prefixes) for m in members) and owned == everyone

    last, took = polled(lambda: group_members(settings), settled, dict[str, list[int]](), timeout)
    if not settled(last):
        raise PipelineError(f"the processor group did not settle on {nodes} within {timeout:.0f}s: {last}",
                            component="chaos")  # fmt: skip
    return took


class AppHostKill(HaScenario, Takeover):
    """Two app hosts behind HAProxy; every process of one SIGKILLed. The survivor takes over partitions
    (session timeout) and pending entries (heartbeat TTL). Once drained (the drain clock measures the
    survivor alone) the dead host starts again under its own name, refused until its old lease expired."""

    key = "h9"
    name = "ha-app-host-kill"
    title = "App tier: SIGKILL of every process on one of two app hosts, under load through HAProxy"
    fault = (
        "SIGKILL of every process in app host bpapp1 (ingest, processor, workers, supervisor); the "
        "load goes through HAProxy; the host is restarted under its own name once drained"
    )
    SERVICES = ("ingest", "processor", "worker")
    taken_over, clock = "the live host's workers claimed the dead host's pending entries", "after the kill"
    metric, digits = "claimed_s", 1

    def __init__(self) -> None:
        self.hosts: list[AppHost] = []
        self.paused: list[str] = []
        self._restart: threading.Thread | None = None
        self._refused = 0

    def load_url(self, settings: HarnessSettings) -> str | None:
        return f"http://{Topology(settings.ha_subnet).node('lb').ip}:{settings.ingest.port}"

    def before_load(self, ctx: ChaosContext) -> None:
        """The host's own pipeline steps aside; two app hosts share the cluster instead."""
        for name, child in ctx.sup.children.items():
            if child.spec.role in self.SERVICES:
                faults.stop_child(ctx.sup, name)
                self.paused.append(name)
        self.hosts = [AppHost(ctx.settings, i, ctx.log_out) for i in range(1, APP_HOSTS + 1)]
        for host in self.hosts:
            host.start()
        for host in self.hosts:
            host.wait_ready()
        balancer = self._balancer(ctx)
        wait_until(
            lambda: set(balancer.server_states().values()) == {"UP"},
            30,
            "HAProxy: both hosts UP",
            errors=(OSError,),
        )
        settle = wait_owners(ctx.settings, [h.node for h in self.hosts], 90)
        hosts = ", ".join(h.node for h in self.hosts)
        ctx.note(
            f"app hosts {hosts} share the partitions after {settle:.1f} s: {group_members(ctx.settings)}"
        )

    @staticmethod
    def _balancer(ctx: ChaosContext) -> HaProxy:
        balancer = _ha(ctx).components["haproxy"]
        assert isinstance(balancer, HaProxy)
        return balancer

    def inject(self, ctx: ChaosContext) -> None:
        victim, survivor = self.hosts
        members = group_members(ctx.settings)
        both = all(any(m.startswith(_prefix(h.node)) and p for m, p in members.items()) for h in self.hosts)
        ctx.check("both hosts' processors held partitions before the kill", both, str(members))
        consumers = [
            names.node_member(victim.node, f"worker-{i}") for i in range(1, victim.settings.worker.count + 1)
        ]
        wait_pending(ctx.settings, consumers[0], at_least=1, timeout=10.0)
        killed = victim.kill()
        t0 = time.monotonic()
        ctx.mark(f"SIGKILL of every process on {victim.node} ({killed} processes)")
        self._probe = probe = TakeoverProbe(ctx.settings, consumers, started=t0)
        probe.start()
        ctx.metrics["pending_at_kill"] = probe.initial
        ctx.note(f"{victim.node} had {killed} processes; its workers held {probe.initial} pending entries")
        balancer = self._balancer(ctx)
        wait_until(lambda: balancer.server_states().get(victim.node, "").startswith("DOWN"), 30,
                   f"HAProxy marks {victim.node} down", errors=(OSError,))  # fmt: skip
        ctx.metrics["lb_down_s"] = round(time.monotonic() - t0, 1)
        took = wait_owners(ctx.settings, [survivor.node], FAILOVER_TIMEOUT_S)
        ctx.metrics["failover_s"] = ctx.metrics["takeover_s"] = round(time.monotonic() - t0, 1)
        ctx.check(f"{survivor.node}'s processor took every partition", took < FAILOVER_TIMEOUT_S,
                  f"{ctx.metrics['failover_s']} s after the kill (session timeout "
                  f"{ctx.settings.kafka.session_timeout_ms / 1000:g} s)")  # fmt: skip

    def _restart_victim(self) -> None:
        """Start the dead host again; ``run`` refuses while its old lease lives, so retry until then."""
        victim = self.hosts[0]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            victim.start()
            while victim.alive():
                with contextlib.suppress(PipelineError):
                    victim.wait_ready(timeout=2)
                    return
            self._refused += 1
            time.sleep(1)

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        super().after_drain(ctx, ledger)
        self._restart = threading.Thread(target=self._restart_victim, name="restart-app-host")
        self._restart.start()

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._restart is not None:
            self._restart.join(timeout=150)
            victim = self.hosts[0]
            ctx.check(f"{victim.node} restarted under its own node name", victim.alive(),
                      f"refused {self._refused} time(s) while its old lease lived")  # fmt: skip
            ctx.metrics["restart_refused"] = self._refused
        super().cleanup(ctx)
        for host in self.hosts:
            host.stop()
        faults.resume(ctx.sup, *self.paused)


ALL: tuple[Callable[[], Scenario], ...] = (
    partial(KafkaLeaderFault, "h1", "ha-kafka-leader-kill", "kill",
            "Kafka: SIGKILL of the broker leading most partitions (RF=3, min.insync=2)",
            "SIGKILL of the broker leading most partitions of the event topic, restarted after the hold",
            ride_through=True),
    partial(KafkaControllerFault, "h2", "ha-kafka-controller-kill", "kill",
            "Kafka: SIGKILL of the active controller (3-voter KRaft quorum)",
            "SIGKILL of the node that is the active controller, restarted after the hold"),
    partial(KafkaLeaderFault, "h3", "ha-kafka-broker-pause", "pause",
            "Kafka: SIGSTOP of the broker leading most partitions, SIGCONT after the hold",
            "SIGSTOP of the broker leading most partitions for the hold, then SIGCONT"),
    partial(KafkaLeaderFault, "h4", "ha-kafka-broker-partition", "cut",
            "Kafka: the broker leading most partitions cut off from the two others (iptables)",
            "iptables DROP between one broker and the two others for the hold (clients still reach it)"),
    KafkaRollingRestart,
    partial(RedisFault, "h6", "ha-redis-primary-kill", "kill",
            "Redis: SIGKILL of the primary, Sentinel failover",
            "SIGKILL of the Redis primary; the old primary restarted (it rejoins as a replica) after the "
            "hold",
            ride_through=True),
    # The Sentinels promote a replica; the old primary keeps taking writes until min-replicas-max-lag
    # passes, then refuses them (NOREPLICAS). What it took is lost when it rejoins as a replica, so
    # none of it may have been committed to Kafka (WAIT saw 0 replicas).
    partial(RedisFault, "h7", "ha-redis-split-brain", "cut",
            "Redis: the primary cut off from its replicas and Sentinels (split brain), then healed",
            "iptables DROP between the primary and its replicas and Sentinels; the host still reaches it"),
    partial(RedisFault, "h8", "ha-redis-replica-kill", "kill",
            "Redis: SIGKILL of one replica, restarted after the hold",
            "SIGKILL of one Redis replica, restarted after the hold", replica=True),
    AppHostKill,
)  # fmt: skip
SMOKE = ("ha-kafka-leader-kill", "ha-redis-primary-kill")


def select(wanted: list[str]) -> list[Scenario]:
    """Fresh ha scenarios by name or key, in the order asked; ``all`` selects every one."""
    return scenarios.select(wanted, ALL, "ha scenario", as_asked=True)
