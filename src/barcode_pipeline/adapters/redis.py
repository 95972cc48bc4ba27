"""Redis clients and the Lua scripts shipped as package data."""

from __future__ import annotations

from importlib import resources

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
