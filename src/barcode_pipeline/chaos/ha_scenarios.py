"""Fault scenarios of the ``ha`` profile (stack/ha.py): one node of a replicated cluster fails.

They run under the same harness as the single-node scenarios (steady load, inject, hold, heal,
drain, then every acknowledged scan accounted for); what differs is that the pipeline must ride
through the fault: Kafka elects new partition leaders, Sentinel promotes a replica.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import redis
from confluent_kafka.admin import AdminClient

from barcode_pipeline import names
from barcode_pipeline.adapters.sentinel import primary_address
from barcode_pipeline.chaos.context import ChaosContext
from barcode_pipeline.chaos.scenarios import Scenario
from barcode_pipeline.errors import PipelineError
from barcode_pipeline.stack.ha import HaKafkaNode, HaRedisNode, HaStackManager

FAILOVER_TIMEOUT_S = 60.0


def _ha(ctx: ChaosContext) -> HaStackManager:
    if not isinstance(ctx.stack, HaStackManager):
        raise PipelineError("this scenario needs the ha profile (--profile ha)", component="chaos")
    return ctx.stack


def topic_leaders(bootstrap: str, topic: str = names.TOPIC) -> dict[int, int]:
    """Partition -> leader broker id (-1 while a partition has none)."""
    meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in meta.topics[topic].partitions.values()}


class KafkaLeaderKill(Scenario):
    """SIGKILL of the broker that leads most partitions of the event topic; restarted at heal."""

    key = "h1"
    name = "ha-kafka-leader-kill"
    title = "Kafka: SIGKILL of the broker leading most partitions (RF=3, min.insync=2)"
    fault = "SIGKILL of the broker leading most partitions of the event topic, restarted after the hold"

    def __init__(self) -> None:
        self.node: HaKafkaNode | None = None

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        leaders = topic_leaders(stack.topology.bootstrap)
        victim, led = Counter(leaders.values()).most_common(1)[0]
        self.node = next(k for k in stack.kafka_nodes() if k.node_id == victim)
        ctx.note(f"killing {self.node.name}, leader of {led} of {len(leaders)} partitions")
        self.node.kill()
        ctx.check(f"{self.node.name} is down during the hold", self.node.pid() is None)
        t0 = time.monotonic()
        deadline = t0 + FAILOVER_TIMEOUT_S
        others = [k for k in stack.kafka_nodes() if k is not self.node]
        bootstrap = ",".join(k.address for k in others)
        while time.monotonic() < deadline:
            try:
                now = topic_leaders(bootstrap)
                if all(leader >= 0 and leader != victim for leader in now.values()):
                    break
            except Exception:  # metadata from a broker that is itself catching up: ask again
                pass
            time.sleep(0.2)
        failover_s = time.monotonic() - t0
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("every partition got a new leader", failover_s < FAILOVER_TIMEOUT_S, f"{failover_s:.1f} s")

    def heal(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            self.node.start()

    def cleanup(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            self.node.start()


class RedisPrimaryKill(Scenario):
    """SIGKILL of the Redis primary: Sentinel promotes a replica; the old one rejoins at heal."""

    key = "h6"
    name = "ha-redis-primary-kill"
    title = "Redis: SIGKILL of the primary, Sentinel failover"
    fault = "SIGKILL of the Redis primary; the old primary restarted (it rejoins as a replica) after the hold"

    def __init__(self) -> None:
        self.node: HaRedisNode | None = None

    def inject(self, ctx: ChaosContext) -> None:
        stack = _ha(ctx)
        old = primary_address(ctx.settings)
        self.node = next(n for n in stack.redis_nodes() if n.net.ip == old[0])
        ctx.note(f"killing {self.node.name}, the primary at {old[0]}:{old[1]}")
        self.node.kill()
        t0 = time.monotonic()
        new = old
        while time.monotonic() - t0 < FAILOVER_TIMEOUT_S:
            with contextlib.suppress(redis.RedisError):
                new = primary_address(ctx.settings)
            if new != old:
                break
            time.sleep(0.1)
        failover_s = time.monotonic() - t0
        ctx.metrics["failover_s"] = round(failover_s, 1)
        ctx.check("Sentinel promoted a replica", new != old, f"{old[0]} -> {new[0]} in {failover_s:.1f} s")

    def heal(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            self.node.start()

    def cleanup(self, ctx: ChaosContext) -> None:
        if self.node is not None:
            self.node.start()


SMOKE: tuple[type[Scenario], ...] = (KafkaLeaderKill, RedisPrimaryKill)
