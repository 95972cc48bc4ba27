"""Redis clients and the Lua scripts shipped as package data."""

from __future__ import annotations

from importlib import resources

import redis

from barcode_pipeline.config import Settings


def client(settings: Settings, *, timeout: float = 5.0) -> redis.Redis:
    """A text-mode client (stream fields are ASCII); hiredis parses replies when installed."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


def lua_source(name: str) -> str:
    """Text of ``barcode_pipeline/lua/<name>.lua``."""
    return resources.files("barcode_pipeline.lua").joinpath(f"{name}.lua").read_text()
