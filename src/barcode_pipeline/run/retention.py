"""The table's retention, kept by ``run``: partitions created ahead and old ones dropped, hourly.

One node at a time: every ``run`` of a cluster has this thread, and a short Redis lock decides who
does a round (a round is idempotent, so a lock lost half way only costs a repeated, empty round).
It runs with the admin database account of ``run`` (DDL), never with a worker's.
"""

from __future__ import annotations

import logging
import socket
import threading

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.db import partitions

log = logging.getLogger(__name__)


class RetentionKeeper:
    """A daemon thread: one maintenance round now, then every ``db_partition_interval_s``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="db-retention")

    def start(self) -> None:
        if self.settings.db.partition_interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        interval = self.settings.db.partition_interval_s
        while not self._stop.is_set():
            try:
                self.round()
            except Exception:  # the next round tries again; the pipeline matters more
                log.exception("partition maintenance failed; retrying in %.0f s", min(interval, 60.0))
                self._stop.wait(min(interval, 60.0))
                continue
            self._stop.wait(interval)

    def round(self) -> partitions.Plan | None:
        """One round if this node gets the lock (None if another node holds it)."""
        s = self.settings
        client = redis_adapter.client(s)
        try:
            token = f"{socket.gethostname()}:{s.node_name}"
            lock_s = max(60, int(min(s.db.partition_interval_s, 600)))
            if not client.set(names.RETENTION_LOCK, token, nx=True, ex=lock_s):
                return None
            # a database failure propagates: the loop logs it once and retries sooner
            return partitions.maintain(
                s.db.url, ahead_days=s.db.partitions_ahead_days, retention_days=s.db.retention_days
            )
        except redis.RedisError as exc:
            log.warning("partition maintenance skipped this round: redis %s", exc)
            return None
        finally:
            client.close()
