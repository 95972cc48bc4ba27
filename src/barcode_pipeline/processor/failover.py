"""The parts of the commit protocol that make it survive a Redis failover or a Redis restart.

Redis replicates asynchronously: a promoted replica can lack the last XADDs of the old primary. A
single Redis can lose acknowledged writes too: with ``appendfsync everysec`` it answers before its
AOF write whenever the previous fsync is still running (for up to 2 s), so a crash loses what it
had answered meanwhile, after the processor committed those offsets.
Three defences, all in the processor, because it alone can re-drive a batch from Kafka:
1. WAIT before commit: offsets are committed only once ``BP_REDIS_MIN_REPLICAS`` replicas
   acknowledged the batch (on the connection that ran the script); a short count means no commit
   and a retry of the batch. Every publish call bumps a counter (lua/dedupe_publish.lua), so the
   WAIT of a retry whose events were all marked already still covers the first attempt's XADDs.
2. Rewind on a primary change: when the server that runs the script is another one than before
   (its run id changed), the group is rewound to what it had committed a safety window before the
   old primary was last seen, and that range is processed again. Markers and the UNIQUE key make
   the reprocessing free of duplicates; whatever the failover lost is published again. A single
   Redis restarted after a crash has a new run id as well, so the same rewind covers it.
3. A commit mark: every offset commit carries, as Kafka commit metadata, the run id of the server
   that took the batch and the partition's offset committed a safety window earlier. A processor
   that takes over a partition (a restart, a rebalance) and finds another run id there rewinds it
   to that offset: the server the previous owner wrote to may have lost its last writes while
   nobody was watching.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from barcode_pipeline.errors import DeliveryError


class ReplicaShortfall(DeliveryError):
    """Fewer replicas acknowledged the batch than required; it must not be committed."""

    def __init__(self, acked: int, wanted: int, published: int) -> None:
        super().__init__(f"WAIT: {acked} of {wanted} replicas acknowledged the batch", component="redis")
        self.published = published


@dataclass
class CommitHistory:
    """Committed offsets over time, so a rewind can return to the position of a past moment."""

    keep_ms: int
    base: dict[int, int] = field(default_factory=dict)  # folded state of entries older than keep_ms
    entries: deque[tuple[int, dict[int, int]]] = field(default_factory=deque)

    def record(self, now_ms: int, offsets: dict[int, int]) -> None:
        self.entries.append((now_ms, dict(offsets)))
        while self.entries and self.entries[0][0] < now_ms - self.keep_ms:
            self.base.update(self.entries.popleft()[1])

    def seed(self, partition: int, offset: int) -> None:
        """What a partition is known to have had committed before this process kept a history."""
        self.base.setdefault(partition, offset)

    def safe(self, partition: int, t_ms: int) -> int | None:
        """The offset committed at or before ``t_ms``; failing that, the oldest one known."""
        return self.safe_all(t_ms).get(partition)

    def safe_all(self, t_ms: int) -> dict[int, int]:
        """:meth:`safe` for every partition known, in one pass over the history."""
        state = self.at(t_ms)
        for _, offsets in self.entries:
            for partition, offset in offsets.items():
                state.setdefault(partition, offset)
        return state

    def at(self, t_ms: int) -> dict[int, int]:
        """Per partition, the last offset committed at or before ``t_ms`` (as far as known)."""
        state = dict(self.base)
        for when, offsets in self.entries:
            if when > t_ms:
                break
            state.update(offsets)
        return state


@dataclass
class PrimaryWatch:
    """Notices that the Redis server taking the writes is not the one it was (run id changed)."""

    run_id: str | None = None
    last_seen_ms: int = 0

    def changed_since(self, run_id: str) -> int | None:
        """If ``run_id`` is not the primary seen so far, when that one was last seen (else None)."""
        if self.run_id is None or self.run_id == run_id:
            return None
        return self.last_seen_ms

    def seen(self, run_id: str, now_ms: int) -> None:
        """A batch went to ``run_id`` and was handled (committed, or rewound over)."""
        self.run_id, self.last_seen_ms = run_id, now_ms


MARK_PREFIX = "bp1"


@dataclass(frozen=True)
class CommitMark:
    """Commit metadata: the Redis server that took the batch, and where a rewind would go back to."""

    run_id: str
    safe: int  # the partition's offset committed a safety window before this commit

    def encode(self) -> str:
        return f"{MARK_PREFIX} {self.run_id} {self.safe}"

    @staticmethod
    def decode(metadata: str | None) -> CommitMark | None:
        """None for a commit without a mark (a release before marks, a tool, an empty group)."""
        parts = (metadata or "").split()
        if len(parts) != 3 or parts[0] != MARK_PREFIX or not parts[2].isdigit():
            return None
        return CommitMark(parts[1], int(parts[2]))


def rewind_targets(
    consumer: Consumer, topic: str, since_ms: int, history: CommitHistory
) -> list[TopicPartition]:
    """For every assigned partition: the earliest of its position now, the offset committed at
    ``since_ms`` and the first record written at or after ``since_ms`` (offsets_for_times)."""
    assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
    if not assigned:
        return []
    positions = {tp.partition: tp.offset for tp in consumer.position(assigned)}
    query = [TopicPartition(topic, tp.partition, since_ms) for tp in assigned]
    by_time = {tp.partition: tp.offset for tp in consumer.offsets_for_times(query, timeout=10)}
    committed_then = history.at(since_ms)
    targets: list[TopicPartition] = []
    for tp in assigned:
        p = tp.partition
        candidates = [
            o for o in (positions.get(p, -1), by_time.get(p, -1), committed_then.get(p, -1)) if o >= 0
        ]
        if candidates:
            targets.append(TopicPartition(topic, p, min(candidates)))
    return targets
