"""One ``run`` per node name on a cluster: a Redis lease (SET NX with a TTL), renewed from a thread.

Two ``run``s with the same node name would share static member ids and consumer names, so their
processors would fence each other and their workers would ack each other's entries. The second
one is refused at start instead. A crashed node stops renewing, so its lease expires after
``BP_NODE_LEASE_TTL_S`` and the node can start again; a clean stop releases it at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

import redis

from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

# Renew or release only while the lease is still ours (another node may hold it after an expiry).
_IF_OURS = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call({}) end return 0"
_RENEW = _IF_OURS.format("'PEXPIRE', KEYS[1], ARGV[2]")
_RELEASE = _IF_OURS.format("'DEL', KEYS[1]")


class NodeNameInUse(PipelineError):
    """Another live ``run`` holds this node name's lease on the cluster."""


class NodeLease:
    """The lease of ``settings.node_name``: :meth:`acquire`, renewed every TTL/3 until :meth:`release`."""

    def __init__(self, settings: Settings) -> None:
        self.node = settings.node_name
        self.key = names.node_lease_key(self.node)
        self.ttl_ms = int(settings.node_lease_ttl_s * 1000)
        self.token = f"host {socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}"
        self._client = redis_adapter.client(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lease or raise :class:`NodeNameInUse` (one line naming the holder)."""
        try:
            if not self._client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                holder = str(self._client.get(self.key) or "gone meanwhile")
                left = max(0, int(self._client.pttl(self.key)))
                raise NodeNameInUse(
                    f"node name {self.node!r} is already running on this cluster ({holder}); "
                    f"give this one its own BP_NODE_NAME (a crashed node's lease expires within "
                    f"{left / 1000:.0f} s)",
                    component="run",
                )
        except redis.RedisError as exc:
            raise PipelineError(f"cannot take the node lease {self.key}: {exc}", component="run") from None
        self._thread = threading.Thread(target=self._renew, daemon=True, name="node-lease")
        self._thread.start()

    def _renew(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                renewed = self._client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms)
                # Expired while Redis was out of reach: take it back unless another node did.
                if not renewed and not self._client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                    log.error("node lease %s lost to %s", self.key, self._client.get(self.key))
            except redis.RedisError as exc:
                log.warning("node lease %s not renewed: %s", self.key, exc)

    def release(self) -> None:
        """Stop renewing and free the name (only if still ours)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + 5
        while True:
            try:
                self._client.eval(_RELEASE, 1, self.key, self.token)
                break
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    log.warning("node lease %s not released (expires by itself): %s", self.key, exc)
                    break
                time.sleep(0.2)
        self._client.close()
