"""A consumer that is alive, not fatally failed, and still delivers nothing: when to give up on it.

``chaos nemesis`` (seed 8: Kafka killed, shut down cleanly and paused in turn, the processor paused
in between) left a consumer whose group-coordinator connection never came back: librdkafka timed
out one queued request every 60 s, forever, and raised nothing. The processor consumed nothing
while thousands of records waited. No error tells this case apart, so the processor watches for
its symptom: nothing delivered for a while although a fresh client sees records waiting for the
group. Then the consumer is replaced like a fenced one (``fencing.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from confluent_kafka import KafkaException

from barcode_pipeline.config import Settings
from barcode_pipeline.probes.backlog import kafka_lag

log = logging.getLogger(__name__)


class IdleWatch:
    """Time ``consume()`` returned nothing, counted in the processor's own running time.

    Each empty poll adds at most twice the poll timeout, so a process stopped by SIGSTOP (or a
    machine that stalls it) does not come back believing it has been idle all that while.
    """

    def __init__(self, after_s: float, poll_timeout_s: float, recheck_s: float = 10.0) -> None:
        self.after_s = after_s
        self.recheck_s = recheck_s
        self._cap = 2 * poll_timeout_s
        self.idle_s = 0.0
        self._next_check = after_s

    def polled(self, delivered: int, elapsed_s: float) -> bool:
        """Record one poll; True when the idle time calls for a look at the group's lag."""
        if delivered:
            self.reset()
            return False
        self.idle_s += min(elapsed_s, self._cap)
        if self.idle_s < self._next_check:
            return False
        self._next_check = self.idle_s + self.recheck_s
        return True

    def reset(self) -> None:
        self.idle_s = 0.0
        self._next_check = self.after_s


def records_waiting(settings: Settings, group: str, partitions: Collection[int]) -> int | None:
    """Records committed-behind for ``group`` on ``partitions`` (all if empty), by a fresh client.

    None when that client cannot reach Kafka either: then the broker is down, not the consumer.
    """
    try:
        lag = kafka_lag(settings, group)
    except KafkaException as exc:
        log.debug("lag probe failed: %s", exc)
        return None
    if not lag:
        return None
    return sum(n for p, n in lag.items() if not partitions or p in partitions)
