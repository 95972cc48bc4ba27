"""Stream retention: delete entries once every group has acknowledged them and they have aged.

Without it the shard streams keep every scan ever published, so Redis memory and the AOF grow all
night. Acked entries are never needed again by the pipeline (recovery reads only pending ones, and
a replay re-feeds from Kafka, the long-term log), so the workers trim them as they go, with
``lua/trim_acked.lua``. A short retention keeps the last minutes readable for an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from barcode_pipeline.adapters.redis import lua_source
from barcode_pipeline.worker import metrics

log = logging.getLogger(__name__)


class Trimmer:
    """Trims the given streams below what their consumer groups still need."""

    def __init__(
        self, client: redis.Redis, streams: Sequence[str], *, retention_s: float, exact: bool = False
    ) -> None:
        self._script = client.register_script(lua_source("groups", "trim_acked"))
        self._streams = list(streams)
        # '~' trims whole radix-tree nodes only (up to 100 entries each): the cheap form for the loop.
        self._args: list[str | int] = ["=" if exact else "~", round(retention_s * 1000)]

    def __call__(self) -> int:
        """Delete acked entries; returns how many went. Raises ``redis.RedisError``."""
        deleted = int(self._script(keys=self._streams, args=self._args))
        metrics.TRIMMED.inc(deleted)
        if deleted:
            log.debug("trimmed %d acknowledged entries", deleted)
        return deleted
