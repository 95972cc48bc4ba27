"""Who is the primary worker, and when the others (standby workers) read new entries.

With every worker reading, each one commits a partial batch every max delay, so at low load the
commit count grows with the number of workers. Instead the primary (lowest live name) always reads,
and is also the one that trims the streams (one trim covers every shard). The others join only when
the primary has fallen behind: a full batch is waiting undelivered, or the oldest undelivered entry
has waited ``worker_standby_join_ms``. Entries waiting briefly while the primary commits are normal
and do not count; an age, not a count of polls, keeps a slow commit on a loaded machine from waking
the standby. Takeover of dead consumers' entries is unaffected (the sweep runs first), so a dead
primary's work is still picked up in seconds.
"""

from __future__ import annotations

from collections.abc import Collection

from barcode_pipeline.adapters.redis import WaitingProbe


def is_primary(consumer: str, live_peers: Collection[str]) -> bool:
    """The live worker with the lowest name is the primary (alone, a worker is its own primary)."""
    return not live_peers or consumer < min(live_peers)


class StandbyRule:
    """Whether this worker takes new entries now (see the module docstring)."""

    def __init__(self, probe: WaitingProbe, *, enabled: bool, batch_size: int, join_ms: int) -> None:
        self._probe = probe
        self._enabled = enabled
        self._batch_size = batch_size
        self._join_ms = join_ms

    def reads_new(self, consumer: str, live_peers: Collection[str], *, batched: int) -> bool:
        """``batched``: entries this worker already holds (it then keeps reading to fill its batch)."""
        if not self._enabled or batched or is_primary(consumer, live_peers):
            return True
        waiting, oldest_ms = self._probe()
        return waiting >= self._batch_size or oldest_ms >= self._join_ms
