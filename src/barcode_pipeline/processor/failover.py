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

import time
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


# The commit marks' safe offsets are recomputed at most this often (a pass over the commit history):
# a second-old value is an older offset, which only makes a rewind go further back.
SAFE_REFRESH_S = 1.0


@dataclass(frozen=True)
class Rewind:
    """What one rewind did: the offsets committed and sought, and how many records are read again."""

    targets: list[TopicPartition]
    rewound: int
    since_ms: int
    inherited: list[int]  # partitions rewound for another server's commit mark


class Marks:
    """One processor's commit marks: which assigned partitions' marks are still to be read, the safe
    offsets its own marks name, and the rewind a change of Redis server calls for (defences 2 and 3).

    What is to be read comes from the group's callbacks (``on_assign``, ``on_revoke``): a partition
    given to this member by the group, however briefly it was away, may carry another member's mark.
    Partitions assigned by hand (a replay's fixed range) have none to read."""

    def __init__(self, topic: str, history: CommitHistory, window_ms: int) -> None:
        self.topic, self.history, self.window_ms = topic, history, window_ms
        self.unread: set[int] = set()  # partitions the group gave us whose commit mark is not read yet
        self._safe: dict[int, int] = {}  # per partition, the offset a mark names (see mark)
        self._safe_at = -SAFE_REFRESH_S

    def on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions (re)assigned are looked at again: one revoked and given back within a single
        ``consume()`` never leaves the assignment set, and another member may have committed there."""
        self.unread |= {tp.partition for tp in partitions if tp.partition is not None}

    def on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Revoked (or lost) partitions are no longer ours to look at."""
        self.unread -= {tp.partition for tp in partitions}

    def mark(self, run_id: str | None, partition: int, offset: int) -> str | None:
        """The commit metadata for ``partition`` at ``offset`` (None until a run id is known)."""
        if not run_id:
            return None
        now = time.monotonic()
        if partition not in self._safe or now - self._safe_at >= SAFE_REFRESH_S:
            self._safe, self._safe_at = self.history.safe_all(int(time.time() * 1000) - self.window_ms), now
        return CommitMark(run_id, min(offset, self._safe.get(partition, offset))).encode()

    def entries(self, run_id: str | None, offsets: dict[int, int]) -> list[TopicPartition]:
        """``{partition: offset}`` as offset-commit entries, each carrying its mark."""
        return [
            TopicPartition(self.topic, p, o, metadata=self.mark(run_id, p, o)) for p, o in offsets.items()
        ]

    def inherited(self, consumer: Consumer, run_id: str) -> tuple[dict[int, tuple[int, int]], set[int]]:
        """For partitions assigned since the last look: (safe, committed) offsets of those whose commit
        mark names another server, and every partition looked at (seeded into the history meanwhile)."""
        if self.unread:  # (the assignment is asked only then: not once per publish)
            # Only what is ours now: a consumer replaced after a fatal error, or a partition lost
            # without a callback, leaves partitions behind that must not be sought.
            self.unread &= {tp.partition for tp in consumer.assignment()}
        new = set(self.unread)
        if not new:
            return {}, set()
        inherited: dict[int, tuple[int, int]] = {}
        for tp in consumer.committed([TopicPartition(self.topic, p) for p in sorted(new)], timeout=10):
            mark = CommitMark.decode(tp.metadata)
            if mark is not None and mark.run_id != run_id:
                inherited[tp.partition] = (mark.safe, tp.offset)
            elif mark is not None:
                self.history.seed(tp.partition, mark.safe)
            elif tp.offset >= 0:  # committed by a release without marks: the best known bound
                self.history.seed(tp.partition, tp.offset)
        return inherited, new

    def rewind(self, consumer: Consumer, run_id: str, last_seen_ms: int | None, now_ms: int) -> Rewind | None:
        """Commit, then seek, the offsets a server change calls for: what was committed a window before
        the old server was last seen (``last_seen_ms``, this process saw it), and the safe offset of
        every newly assigned partition marked by another server. None when there is nothing to re-read.
        A KafkaException leaves the marks unread: the next look tries again."""
        since_ms = (last_seen_ms or now_ms) - self.window_ms
        inherited, taken = self.inherited(consumer, run_id)
        if last_seen_ms is None and not inherited:
            self.unread -= taken
            return None
        assigned = consumer.assignment()
        positions = {tp.partition: tp.offset for tp in consumer.position(assigned) if tp.offset >= 0}
        live = rewind_targets(consumer, self.topic, since_ms, self.history) if last_seen_ms else []
        goal = {tp.partition: tp.offset for tp in live}
        for partition, (safe, committed) in inherited.items():
            positions.setdefault(partition, committed)  # not fetched yet: it would start there
            goal[partition] = min(safe, goal.get(partition, safe), positions[partition])
        targets = [
            TopicPartition(self.topic, p, o, metadata=self.mark(run_id, p, o)) for p, o in goal.items()
        ]
        if targets:
            # Committed first: a crash right after the rewind must not skip the re-read range.
            consumer.commit(offsets=targets, asynchronous=False)
            for tp in targets:
                consumer.seek(tp)
        self.unread -= taken
        rewound = sum(max(0, positions.get(tp.partition, tp.offset) - tp.offset) for tp in targets)
        return Rewind(targets, rewound, since_ms, sorted(inherited))
