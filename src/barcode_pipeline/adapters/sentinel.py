"""Redis through Sentinel: a client that follows the primary across failovers.

redis-py's Sentinel pool asks the Sentinels for the primary whenever it opens a connection, and
drops a connection whose server turned out to be a replica (READONLY). Two additions here:
- a primary that refuses writes because it lost its replicas (NOREPLICAS, ``min-replicas-to-write``)
  is treated the same way: it is the old primary of a split brain, so the connection is dropped
  and the next one asks the Sentinels again;
- commands are retried on connection errors for long enough to span a failover, so callers
  see a slow command rather than an error.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError

# ~10 s of retries (capped back-off): Sentinel needs down-after (2 s) plus an election.
FAILOVER_RETRIES = 25
FAILOVER_BACKOFF = ExponentialBackoff(cap=0.5, base=0.05)
SENTINEL_TIMEOUT_S = 1.0
# Replies that mean "this server is no longer (or not really) the primary".
NOT_PRIMARY = ("NOREPLICAS", "MASTERDOWN")


def sentinel_addresses(spec: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` -> [(host, port)]; a malformed entry is a ConfigError naming it."""
    out: list[tuple[str, int]] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"BP_REDIS_SENTINELS: {item!r} is not host:port")
        out.append((host, int(port)))
    if not out:
        raise ConfigError("BP_REDIS_SENTINELS: no host:port given")
    return out


class FailoverAwareConnection(SentinelManagedConnection):
    """Also leaves a primary that answers NOREPLICAS or MASTERDOWN (see module docstring), and
    asks the Sentinels on every reconnect.

    redis-py 8.1 reconnects a dropped connection from ``send_packed_command`` through
    ``connect_check_health``, which skips the Sentinel lookup of ``connect``: the retry after a
    failover would reconnect to the old primary's address, again and again.
    """

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if self.connection_pool.is_master and str(exc).startswith(NOT_PRIMARY):
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis.ConnectionError(f"primary refused ({exc}); asking Sentinel again") from exc
            raise


def primary_client(
    settings: Settings, *, db: int, timeout: float, decode: bool, retries: int | None = None
) -> redis.Redis:
    """A client of the service's current primary (``BP_REDIS_SERVICE``), database ``db`` (the caller,
    adapters/redis.py, reads it from ``BP_REDIS_URL``); ``retries`` replaces the failover retries."""
    retry = Retry(FAILOVER_BACKOFF, FAILOVER_RETRIES if retries is None else retries)
    url = urlsplit(settings.redis.url)  # the data nodes' credentials, as without Sentinel
    primary: redis.Redis = _sentinel(settings).master_for(
        settings.redis.service,
        username=unquote(url.username) if url.username else None,
        password=unquote(url.password) if url.password else None,
        redis_class=redis.Redis,
        connection_class=FailoverAwareConnection,
        db=db,
        decode_responses=decode,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        health_check_interval=30,
        retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError],
    )
    return primary


def _sentinel(settings: Settings) -> Sentinel:
    kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_TIMEOUT_S,
    }
    if settings.redis.sentinel_password:
        kwargs["password"] = settings.redis.sentinel_password
        kwargs["username"] = settings.redis.sentinel_username or None
    return Sentinel(sentinel_addresses(settings.redis.sentinels), sentinel_kwargs=kwargs)


def primary_address(settings: Settings) -> tuple[str, int]:
    """Where the Sentinels say the primary is now (fault injection and status use this)."""
    host, port = _sentinel(settings).discover_master(settings.redis.service)
    return str(host), int(port)
