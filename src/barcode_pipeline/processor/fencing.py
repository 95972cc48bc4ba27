"""When a Kafka consumer is beyond repair, and how often the processor may replace it.

librdkafka raises a *fatal* error when the broker fences a static member
(``FENCED_INSTANCE_ID``). After that the consumer instance never fetches again: it sits in
join-state ``init`` while ``consume()`` keeps returning nothing, so a processor that only logs
the error is alive and idle for good. One way to get fenced without any rival: the broker
restarts for longer than the session timeout, the client times its session out locally and
rejoins, and an offset commit it had queued while the coordinator was away goes out under the
old membership and is refused. That is what the combined chaos scenario (11) reproduces.

The cure is a new consumer instance under the same instance name, which the broker accepts at
once. A *real* rival (a second process started with the same ``--instance``) fences every new
instance in turn; the budget below turns that ping-pong into an exit with a clear error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

# How long closing a consumer that is being replaced may take. Its close() takes no timeout, and
# one wedged by a network partition was seen blocking 30 s in it (ha scenario h4), while the
# replacement waited and the watchdog restarted the whole processor.
CLOSE_BOUND_S = 5.0


def close_within(close: Callable[[], object], timeout_s: float = CLOSE_BOUND_S) -> bool:
    """Run ``close`` for at most ``timeout_s``; False if it is still running (it is abandoned).

    An abandoned close goes on in a daemon thread; the broker fences the old instance once its
    replacement joins under the same name, so nothing depends on it finishing.
    """
    done = threading.Event()

    def run() -> None:
        try:
            close()
        except Exception:  # the instance is being thrown away: its close's failure changes nothing
            log.debug("closing the replaced consumer failed", exc_info=True)
        finally:
            done.set()

    threading.Thread(target=run, name="consumer-close", daemon=True).start()
    if done.wait(timeout_s):
        return True
    log.warning("the replaced consumer did not close within %.0fs; abandoning it", timeout_s)
    return False


def is_fatal(err: KafkaError) -> bool:
    """True for an error after which the consumer instance is unusable.

    The error event ``consume()`` returns carries the code ``_FATAL`` with ``fatal()`` false
    (only the underlying error is flagged), so both are checked. ``FENCED_INSTANCE_ID`` reaches
    the commit callback before the fatal event does.
    """
    return bool(err.fatal()) or err.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID)


class ReplacementBudget:
    """At most ``limit`` consumer replacements within ``window_s``; more means a rival instance."""

    def __init__(self, limit: int = 3, window_s: float = 120.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        """Record one replacement now; False once the budget for the window is spent."""
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True
