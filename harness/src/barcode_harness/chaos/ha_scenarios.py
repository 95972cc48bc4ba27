"""Fault scenarios of the ``ha`` profile (stack/ha.py): one node of a replicated cluster fails.

They run under the same harness as the single-node scenarios (steady load, inject, hold, heal,
drain, then every acknowledged scan accounted for); what differs is that the pipeline must ride
through the fault: Kafka elects new partition leaders, Sentinel promotes a replica.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import redis
from confluent_kafka.admin import AdminClient

from barcode_harness.chaos import faults
from barcode_harness.chaos.apphosts import AppHost, app_hosts, group_members, prefix, wait_owners
from barcode_harness.chaos.checks import Ledger, TakeoverProbe, wait_pending
from barcode_harness.chaos.context import ChaosContext
from barcode_harness.chaos.scenarios import Scenario
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import netns
from barcode_harness.stack.base import Component
from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.ha_nodes import HaKafkaNode, HaRedisNode
from barcode_harness.stack.haproxy import HaProxy
from barcode_harness.stack.topology import Topology
from barcode_pipeline import names
from barcode_pipeline.adapters.sentinel import primary_address
from barcode_pipeline.errors import ConfigError, PipelineError

FAILOVER_TIMEOUT_S = 60.0


def _ha(ctx: ChaosContext) -> HaStackManager:
    if not isinstance(ctx.stack, HaStackManager):
        raise PipelineError("this scenario needs the ha profile (--profile ha)", component="chaos")
    return ctx.stack


REWOUND = re.compile(r"rewound (\d+) records")


class HaScenario(Scenario):
    """Base of the ha scenarios: reports how many records the processors re-read after a rewind."""

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        ctx.metrics["rewound"] = ctx.logged_since(f"=== scenario {self.key} {self.name}:", REWOUND)


def topic_leaders(bootstrap: str, topic: str = names.TOPIC) -> dict[int, int]:
    """Partition -> leader broker id (-1 while a partition has none)."""
    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in meta.topics[topic].partitions.values()}


class NodeFault(HaScenario):
    """A fault on one node that a restart repairs.

    The heal only begins the restart: a broker's JVM takes many seconds to come up on a loaded
    machine, and the pipeline does not wait for it (the other nodes serve), so the drain clock
    measures the pipeline, not the JVM. Cleanup waits for the node to be healthy again.
    """

    def __init__(self) -> None:
        self.node: Component | None = None
        self._restart: threading.Thread | None = None
        self._failed_over_ms: int | None = None
        self._healed_ms: int | None = None

    def failed_over(self) -> None:
        """The pipeline's clients have a new leader or primary from now on."""
        self._failed_over_ms = int(time.time() * 1000)

    def heal(self, ctx: ChaosContext) -> None:
        self._healed_ms = int(time.time() * 1000)
        if self.node is not None:
            self._restart = threading.Thread(target=self.node.start, name=f"restart-{self.node.name}")
            self._restart.start()

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._restart is not None:
            self._restart.join(timeout=300)
        if self.node is not None:
            self.node.start()

    def after_drain(self, ctx: ChaosContext, ledger: Ledger) -> None:
        """Riding through means answering: an ingest that said 503 from the fault to the heal would
        lose nothing and still have failed. Scans must be acknowledged after the failover, before
        the failed node came back."""
        super().after_drain(ctx, ledger)
        if self._failed_over_ms is None or self._healed_ms is None:
            return
        acked = len(ctx.load.acknowledged(before_ms=self._healed_ms)) - len(
            ctx.load.acknowledged(before_ms=self._failed_over_ms)
        )
        ctx.metrics["acked_between_failover_and_heal"] = acked
        ctx.check("scans acknowledged between the failover and the heal", acked > 0, f"{acked}")


class KafkaLeaderKill(NodeFault):
    """SIGKILL of the broker that leads most partitions of the event topic; restarted at heal."""

    key = "h1"
    name = "ha-kafka-leader-kill"
    title = "Kafka: SIGKILL of the broker leading most partitions (RF=3, min.insync=2)"
    fault = "SIGKILL of the broker leading most partitions of the event topic, restarted after the hold"

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        node, led = _most_leading(stack)
        self.node = node
        ctx.note(f"killing {node.name}, leader of {led} partitions")
        node.kill()
        ctx.check(f"{node.name} is down during the hold", node.pid() is None)
        others = ",".join(k.address for k in stack.kafka_nodes() if k is not node)
        failover_s = _wait_leaders_avoid(ctx, others, node.node_id)
        self.failed_over()
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("every partition got a new leader", failover_s < FAILOVER_TIMEOUT_S, f"{failover_s:.1f} s")


class RedisPrimaryKill(NodeFault):
    """SIGKILL of the Redis primary: Sentinel promotes a replica; the old one rejoins at heal."""

    key = "h6"
    name = "ha-redis-primary-kill"
    title = "Redis: SIGKILL of the primary, Sentinel failover"
    fault = "SIGKILL of the Redis primary; the old primary restarted (it rejoins as a replica) after the hold"

    def inject(self, ctx: ChaosContext) -> None:
        old, node = _current_primary(ctx)
        self.node = node
        ctx.note(f"killing {node.name}, the primary at {old[0]}:{old[1]}")
        node.kill()
        _record_promotion(ctx, old)
        self.failed_over()


def _current_primary(ctx: ChaosContext) -> tuple[tuple[str, int], HaRedisNode]:
    old = primary_address(ctx.settings)
    return old, next(n for n in _ha(ctx).redis_nodes() if n.net.ip == old[0])


def _record_promotion(ctx: ChaosContext, old: tuple[str, int]) -> None:
    failover_s, new = _wait_new_primary(ctx, old)
    ctx.metrics["failover_s"] = round(failover_s, 1)
    ctx.check("Sentinel promoted a replica", new != old, f"{old[0]} -> {new[0]} in {failover_s:.1f} s")


# ---------------------------------------------------------------------------------------- Kafka
def _wait_leaders_avoid(ctx: ChaosContext, bootstrap: str, victim: int) -> float:
    """Seconds until every partition of the event topic has a leader other than ``victim``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < FAILOVER_TIMEOUT_S:
        with contextlib.suppress(Exception):
            if all(leader >= 0 and leader != victim for leader in topic_leaders(bootstrap).values()):
                break
        time.sleep(0.2)
    return time.monotonic() - t0


def _most_leading(stack: HaStackManager) -> tuple[HaKafkaNode, int]:
    leaders = topic_leaders(stack.topology.bootstrap)
    victim, led = Counter(leaders.values()).most_common(1)[0]
    return next(k for k in stack.kafka_nodes() if k.node_id == victim), led


def active_controller(stack: HaStackManager) -> tuple[int, int]:
    """(leader id, epoch) of the metadata quorum, from the live nodes' quorum-state files."""
    states = [s for s in (k.quorum_state() for k in stack.kafka_nodes() if k.pid() is not None) if s]
    return max(states, key=lambda s: s[1]) if states else (-1, -1)


class KafkaControllerKill(NodeFault):
    """SIGKILL of the active KRaft controller: the two other voters elect a new one."""

    key = "h2"
    name = "ha-kafka-controller-kill"
    title = "Kafka: SIGKILL of the active controller (3-voter KRaft quorum)"
    fault = "SIGKILL of the node that is the active controller, restarted after the hold"

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        leader, epoch = active_controller(stack)
        node = next(k for k in stack.kafka_nodes() if k.node_id == leader)
        self.node = node
        ctx.note(f"killing {node.name}, the active controller (epoch {epoch})")
        node.kill()
        t0 = time.monotonic()
        new = (leader, epoch)
        while time.monotonic() - t0 < FAILOVER_TIMEOUT_S:
            new = active_controller(stack)
            if new[0] not in (leader, -1) and new[1] > epoch:
                break
            time.sleep(0.1)
        failover_s = time.monotonic() - t0
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("another voter became the active controller", new[0] != leader,
                  f"node {leader} -> {new[0]} (epoch {new[1]}) in {failover_s:.1f} s")  # fmt: skip


class KafkaBrokerPause(HaScenario):
    """SIGSTOP of the broker leading most partitions (a GC pause or a hung VM), SIGCONT at heal."""

    key = "h3"
    name = "ha-kafka-broker-pause"
    title = "Kafka: SIGSTOP of the broker leading most partitions, SIGCONT after the hold"
    fault = "SIGSTOP of the broker leading most partitions for the hold, then SIGCONT"

    def __init__(self) -> None:
        self.node: HaKafkaNode | None = None
        self.pid: int | None = None

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        self.node, led = _most_leading(stack)
        self.pid = self.node.pid()
        ctx.note(f"pausing {self.node.name} (leader of {led} partitions)")
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
        others = ",".join(k.address for k in stack.kafka_nodes() if k is not self.node)
        failover_s = _wait_leaders_avoid(ctx, others, self.node.node_id)
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("the paused broker's partitions got new leaders", failover_s < FAILOVER_TIMEOUT_S,
                  f"{failover_s:.1f} s")  # fmt: skip

    def heal(self, ctx: ChaosContext) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        if self.node is not None:
            self.node.wait_healthy(timeout=120)

    cleanup = heal


class KafkaBrokerPartition(HaScenario):
    """One broker cut off from the two others by iptables (clients still reach it), then healed."""

    key = "h4"
    name = "ha-kafka-broker-partition"
    title = "Kafka: the broker leading most partitions cut off from the two others (iptables)"
    fault = "iptables DROP between one broker and the two others for the hold (clients still reach it)"

    def __init__(self) -> None:
        self.node: HaKafkaNode | None = None

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        self.node, led = _most_leading(stack)
        peers = [k.net.ip for k in stack.kafka_nodes() if k is not self.node]
        ctx.note(f"cutting {self.node.name} (leader of {led} partitions) off from {', '.join(peers)}")
        netns.cut_off(self.node.net, peers)
        others = ",".join(k.address for k in stack.kafka_nodes() if k is not self.node)
        failover_s = _wait_leaders_avoid(ctx, others, self.node.node_id)
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("the isolated broker's partitions got new leaders", failover_s < FAILOVER_TIMEOUT_S,
                  f"{failover_s:.1f} s")  # fmt: skip

    def heal(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            netns.reconnect(self.node.net)
            self.node.wait_healthy(timeout=120)

    cleanup = heal


class KafkaRollingRestart(HaScenario):
    """Every broker stopped cleanly and restarted, one after the other, under load."""

    key = "h5"
    name = "ha-kafka-rolling-restart"
    title = "Kafka: rolling restart of all 3 brokers (clean stop, start, wait healthy)"
    fault = "each broker in turn stopped cleanly and restarted once the previous one is healthy again"

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        t0 = time.monotonic()
        for node in stack.kafka_nodes():
            node.stop()
            node.start()
            ctx.note(f"{node.name} restarted at {time.monotonic() - t0:.1f} s")
        ctx.metrics["restart_s"] = round(time.monotonic() - t0, 1)

    def hold(self, ctx: ChaosContext) -> None:
        """The restarts are the fault; no extra hold."""


# ---------------------------------------------------------------------------------------- Redis
class RedisSplitBrain(HaScenario):
    """The primary cut off from its replicas and the Sentinels while the pipeline still reaches it.

    The Sentinels promote a replica; the old primary keeps taking writes until
    ``min-replicas-max-lag`` passes, then refuses them (NOREPLICAS). Whatever it took is lost when
    it rejoins as a replica, so none of it may have been committed to Kafka (WAIT saw 0 replicas).
    """

    key = "h7"
    name = "ha-redis-split-brain"
    title = "Redis: the primary cut off from its replicas and Sentinels (split brain), then healed"
    fault = "iptables DROP between the primary and its replicas and Sentinels; the host still reaches it"

    def __init__(self) -> None:
        self.node: HaRedisNode | None = None

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        old, self.node = _current_primary(ctx)
        peers = [n.net.ip for n in stack.redis_nodes() if n is not self.node]
        peers += [s.net.ip for s in stack.sentinels()]
        ctx.note(f"cutting {self.node.name} (primary) off from {', '.join(peers)}")
        netns.cut_off(self.node.net, peers)
        _record_promotion(ctx, old)

    def heal(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            netns.reconnect(self.node.net)
            _wait_replica(self.node)

    cleanup = heal


class RedisReplicaKill(NodeFault):
    """SIGKILL of one replica: commits wait (WAIT wants both) until it is back; nothing is lost."""

    key = "h8"
    name = "ha-redis-replica-kill"
    title = "Redis: SIGKILL of one replica, restarted after the hold"
    fault = "SIGKILL of one Redis replica, restarted after the hold"

    def inject(self, ctx: ChaosContext) -> None:
        primary = primary_address(ctx.settings)
        node = next(n for n in _ha(ctx).redis_nodes() if n.net.ip != primary[0])
        self.node = node
        ctx.note(f"killing {node.name}, a replica")
        node.kill()


def _wait_new_primary(ctx: ChaosContext, old: tuple[str, int]) -> tuple[float, tuple[str, int]]:
    t0 = time.monotonic()
    new = old
    while time.monotonic() - t0 < FAILOVER_TIMEOUT_S:
        with contextlib.suppress(redis.RedisError):
            new = primary_address(ctx.settings)
        if new != old:
            break
        time.sleep(0.1)
    return time.monotonic() - t0, new


def _wait_replica(node: HaRedisNode, timeout: float = FAILOVER_TIMEOUT_S) -> None:
    """A healed old primary is turned into a replica by the Sentinels; wait for its link."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if "link up" in node.role():
                return
        time.sleep(0.2)
    raise PipelineError(f"{node.name} did not rejoin as a replica within {timeout:.0f}s", component="chaos")


# ------------------------------------------------------------------------------------- app tier
class AppHostKill(HaScenario):
    """Two app hosts (``run`` in bpapp1/bpapp2) behind HAProxy; every process of one SIGKILLed.

    The survivor's processor takes the dead host's partitions once its static members' session
    times out, and its workers claim the dead workers' pending entries once their heartbeats
    expire. Once drained, the dead host starts again under its own node name: its lease (not
    renewed since the kill) has expired by then, or ``run`` is refused until it has. The restart
    waits for the drain so that the drain clock measures the surviving host alone.
    """

    key = "h9"
    name = "ha-app-host-kill"
    title = "App tier: SIGKILL of every process on one of two app hosts, under load through HAProxy"
    fault = (
        "SIGKILL of every process in app host bpapp1 (ingest, processor, workers, supervisor); the "
        "load goes through HAProxy; the host is restarted under its own name once drained"
    )
    SERVICES = ("ingest", "processor", "worker")

    def __init__(self) -> None:
        self.hosts: list[AppHost] = []
        self.paused: list[str] = []
        self.probe: TakeoverProbe | None = None
        self._restart: threading.Thread | None = None
        self._refused = 0

    def load_url(self, settings: HarnessSettings) -> str | None:
        return f"http://{Topology(settings.ha_subnet).balancer().ip}:{settings.ingest.port}"

    def before_load(self, ctx: ChaosContext) -> None:
        """The host's own pipeline steps aside; two app hosts share the cluster instead."""
        for name in ctx.sup.children:
            if ctx.sup.children[name].spec.role in self.SERVICES:
                faults.stop_child(ctx.sup, name)
                self.paused.append(name)
        self.hosts = app_hosts(ctx.settings, ctx.log_out)
        for host in self.hosts:
            host.start()
        for host in self.hosts:
            host.wait_ready()
        balancer = self._balancer(ctx)
        _wait_until(lambda: set(balancer.server_states().values()) == {"UP"}, 30, "HAProxy: both hosts UP")
        settle = wait_owners(
            ctx.settings, [prefix(h.node) for h in self.hosts], 90, ctx.settings.kafka.topic_partitions
        )
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
        victim, survivor = self.hosts[0], self.hosts[1]
        members = group_members(ctx.settings)
        holding = [
            h for h in self.hosts if any(m.startswith(prefix(h.node)) and p for m, p in members.items())
        ]
        ctx.check("both hosts' processors held partitions before the kill", len(holding) == 2, str(members))
        consumers = [
            names.node_member(victim.node, f"worker-{i}") for i in range(1, victim.settings.worker.count + 1)
        ]
        wait_pending(ctx.settings, consumers[0], at_least=1, timeout=10.0)
        killed = victim.kill()
        t0 = time.monotonic()
        ctx.mark(f"SIGKILL of every process on {victim.node} ({killed} processes)")
        self.probe = TakeoverProbe(ctx.settings, consumers, started=t0)
        self.probe.start()
        ctx.metrics["pending_at_kill"] = self.probe.initial
        ctx.note(
            f"{victim.node} had {killed} processes; its workers held {self.probe.initial} pending entries"
        )
        balancer = self._balancer(ctx)
        _wait_until(lambda: balancer.server_states().get(victim.node, "").startswith("DOWN"), 30,
                    f"HAProxy marks {victim.node} down")  # fmt: skip
        ctx.metrics["lb_down_s"] = round(time.monotonic() - t0, 1)
        took = wait_owners(
            ctx.settings, [prefix(survivor.node)], FAILOVER_TIMEOUT_S, ctx.settings.kafka.topic_partitions
        )
        ctx.metrics["failover_s"] = round(time.monotonic() - t0, 1)
        ctx.metrics["takeover_s"] = ctx.metrics["failover_s"]
        ctx.check(f"{survivor.node}'s processor took every partition", took < FAILOVER_TIMEOUT_S,
                  f"{ctx.metrics['failover_s']} s after the kill (session timeout "
                  f"{ctx.settings.kafka.session_timeout_ms / 1000:g} s)")  # fmt: skip

    def hold(self, ctx: ChaosContext) -> None:
        super().hold(ctx)
        if self.probe is not None:
            self.probe.join(max(0.0, ctx.params.takeover_target_s + 10 - ctx.since_inject()))

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
        if self.probe is None:
            return
        self.probe.stop()
        took = self.probe.done_after_s
        ctx.metrics["claimed_s"] = None if took is None else round(took, 1)
        target = ctx.params.takeover_target_s
        when = "never" if took is None else f"{took:.1f} s"
        ctx.check(f"the live host's workers claimed the dead host's pending entries within {target:.0f} s",
                  took is not None and took <= target,
                  f"{self.probe.initial} entries, {when} after the kill")  # fmt: skip

    def cleanup(self, ctx: ChaosContext) -> None:
        if self._restart is not None:
            self._restart.join(timeout=150)
            victim = self.hosts[0]
            ctx.check(f"{victim.node} restarted under its own node name", victim.alive(),
                      f"refused {self._refused} time(s) while its old lease lived")  # fmt: skip
            ctx.metrics["restart_refused"] = self._refused
        if self.probe is not None:
            self.probe.stop()
            self.probe.close()
        for host in self.hosts:
            host.stop()
        for name in self.paused:
            faults.resume(ctx.sup, name)


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, redis.RedisError):
            if condition():
                return
        time.sleep(0.1)
    raise PipelineError(f"timed out after {timeout:.0f}s waiting for: {what}", component="chaos")


ALL: tuple[type[Scenario], ...] = (
    KafkaLeaderKill, KafkaControllerKill, KafkaBrokerPause, KafkaBrokerPartition, KafkaRollingRestart,
    RedisPrimaryKill, RedisSplitBrain, RedisReplicaKill, AppHostKill,
)  # fmt: skip
SMOKE: tuple[type[Scenario], ...] = (KafkaLeaderKill, RedisPrimaryKill)


def select(wanted: list[str]) -> list[Scenario]:
    """Fresh ha scenarios by name or key; ``all`` selects every one."""
    every = [cls() for cls in ALL]
    if not wanted or "all" in wanted:
        return every
    by = {s.name: s for s in every} | {s.key: s for s in every}
    unknown = [w for w in wanted if w not in by]
    if unknown:
        raise ConfigError(f"unknown ha scenario(s): {', '.join(unknown)}; choose from: all, "
                          + ", ".join(s.name for s in every))  # fmt: skip
    return [by[w] for w in dict.fromkeys(wanted)]
