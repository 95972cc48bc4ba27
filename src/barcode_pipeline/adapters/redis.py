"""Redis clients and the Lua scripts shipped as package data."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis

from barcode_pipeline.config import Settings


def client(settings: Settings, *, timeout: float = 5.0, decode: bool = True) -> redis.Redis:
    """A Redis client; hiredis parses replies when installed.

    Text mode suits entries the pipeline wrote itself. Readers of arbitrary entries (workers,
    DLQ tools) use ``decode=False``, so one non-UTF-8 entry cannot fail a whole read.
    """
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=decode,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def lua_source(name: str) -> str:
    """Text of ``barcode_pipeline/lua/<name>.lua``."""
    return resources.files("barcode_pipeline.lua").joinpath(f"{name}.lua").read_text()


def _id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def stream_undelivered(client: redis.Redis, stream: str, group: str, *, cap: int = 10_000) -> int:
    """Entries of ``stream`` no consumer of ``group`` has read yet (counted up to ``cap``).

    Computed from the group's last-delivered ID, not from XINFO's ``lag``: after a restart from the
    AOF, Redis 7.0 can report a ``lag`` of thousands for a group that is fully caught up.
    """
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return 0
    for info in groups:
        name = _field(info, "name")
        if (name.decode() if isinstance(name, bytes) else name) != group:
            continue
        last_delivered = _field(info, "last-delivered-id")
        newest: Any = client.xrevrange(stream, count=1)
        if not newest or _id(newest[0][0]) <= _id(last_delivered):
            return 0
        start = last_delivered.decode() if isinstance(last_delivered, bytes) else last_delivered
        waiting: Any = client.xrange(stream, min=f"({start}", count=cap)
        return len(waiting)
    return int(client.xlen(stream))  # no group yet: everything is waiting
