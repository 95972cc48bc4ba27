"""Noticing a Redis primary change from a worker (Sentinel mode).

A failover can lose this worker's last XACKs: their entries are then pending under this worker's
name on the new primary, and a live worker's entries are only claimed after ``claim_min_idle_ms``.
So when the primary changes the worker re-reads its own pending entries at once; the rows are
already stored, the UNIQUE key turns the rewrite into no-ops, and the XACK is repeated.
"""

from __future__ import annotations

import redis


class PrimaryIdentity:
    """The run id of the server the client talks to; ``changed()`` is True once after it changes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.run_id: str | None = None

    def changed(self) -> bool:
        """Raises ``redis.RedisError`` like every other Redis call of the worker loop."""
        run_id = str(self.client.info("server").get("run_id", ""))
        previous, self.run_id = self.run_id, run_id
        return previous is not None and previous != run_id
