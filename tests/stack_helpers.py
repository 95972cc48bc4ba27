"""Small helpers for tests that carve their own room out of the shared stack."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url`` (the stack's, whatever its port), database ``db``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))
