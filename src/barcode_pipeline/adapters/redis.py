"""Redis clients and the Lua scripts shipped as package data."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from barcode_pipeline.adapters.sentinel import primary_client
from barcode_pipeline.config import Settings

T = TypeVar("T")

# Errors worth retrying: the server is away, loading, or failing over (a demoted primary is read-only).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
)


class WritesRefused(redis.RedisError):
    """Redis cannot persist (``MISCONF``: an AOF or snapshot write failed, e.g. its disk is full) and
    refuses every write until a write succeeds again: an outage to wait out, not a bug to exit on."""


def writes_refused(exc: redis.ResponseError) -> WritesRefused | None:
    """``exc`` as :class:`WritesRefused` if it is Redis's ``MISCONF`` refusal (redis-py has no class
    for it; a pipeline wraps it in a longer message)."""
    return WritesRefused(str(exc)) if "MISCONF" in str(exc) else None


def refusal_typed(action: Callable[[], T]) -> T:
    """``action``, with Redis's ``MISCONF`` refusal raised as :class:`WritesRefused`, which callers
    wait out like an outage (a plain ``ResponseError`` is also what a real bug looks like)."""
    try:
        return action()
    except redis.ResponseError as exc:
        refused = writes_refused(exc)
        if refused is None:
            raise
        raise refused from exc


def client(
    settings: Settings, *, timeout: float | None = None, decode: bool = True, retries: int | None = None
) -> redis.Redis:
    """A Redis client; hiredis parses replies when installed. The one factory every component uses.

    With ``BP_REDIS_SENTINELS`` set it follows the primary through Sentinel (adapters/sentinel.py):
    after a failover, the next command goes to the new primary, without a restart.
    Text mode suits entries the pipeline wrote itself. Readers of arbitrary entries (workers,
    DLQ tools) use ``decode=False``, so one non-UTF-8 entry cannot fail a whole read.
    Every reply and connect is bounded (``BP_REDIS_SOCKET_TIMEOUT_S``, ``BP_REDIS_CONNECT_TIMEOUT_S``);
    a blocking read (XREADGROUP BLOCK) must block for less than the socket timeout. ``retries``
    replaces redis-py's own retries (0: a caller that would rather skip a beat than wait).
    """
    retry = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
    if settings.redis.sentinels:
        timeout = timeout or settings.redis.socket_timeout_s
        return primary_client(settings, db=database_of(settings.redis.url), timeout=timeout, decode=decode,
                              retries=retries)  # fmt: skip
    return redis.Redis.from_url(
        settings.redis.url,
        decode_responses=decode,
        socket_timeout=timeout or settings.redis.socket_timeout_s,
        socket_connect_timeout=timeout or settings.redis.connect_timeout_s,
        health_check_interval=30,
        **retry,
    )


def maxmemory(client: redis.Redis) -> int:
    """The server's memory bound in bytes (0: unbounded), from INFO, which every ACL user may run."""
    memory: Any = client.info("memory")
    return int(memory.get("maxmemory", 0))


def database_of(url: str) -> int:
    """The database number in a ``redis://host:port/N`` URL (0 when it names none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def address(client: redis.Redis) -> str:
    """``host:port`` a client connects to, for error messages (a Sentinel client: its service name)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    return str(kwargs.get("service_name", "sentinel"))


def lua_source(*names: str) -> str:
    """Text of ``barcode_pipeline/lua/<name>.lua``; several names are joined in order (a shared
    part such as ``groups`` first, then the script that uses it)."""
    folder = resources.files("barcode_pipeline.lua")
    return "\n".join(folder.joinpath(f"{name}.lua").read_text() for name in names)


class WaitingProbe:
    """Entries no consumer has read yet over several streams, and the age of the oldest, in one call.

    A standby worker asks every poll; the Lua script (``lua/waiting.lua``) answers in one round
    trip where the Python equivalent took three per stream.
    """

    def __init__(self, client: redis.Redis, streams: list[str], group: str, *, cap: int = 1000) -> None:
        self._script = client.register_script(lua_source("groups", "waiting"))
        self._streams = streams
        self._args: list[str | int] = [group, cap]

    def __call__(self) -> tuple[int, int]:
        """(waiting entries, counted up to the cap per stream; age of the oldest in ms, -1 if none)."""
        waiting, oldest_ms = self._script(keys=self._streams, args=self._args)
        return int(waiting), int(oldest_ms)
