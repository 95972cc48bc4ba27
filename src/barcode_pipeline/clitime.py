"""Time arguments of operator commands (``replay --since``, ``dlq list --since``)."""

from __future__ import annotations

from datetime import datetime

from barcode_pipeline.errors import ConfigError


def parse_time_ms(text: str, option: str = "--since") -> int:
    """Epoch ms from ISO-8601 (``2026-11-25T10:00:00+09:00``; local time if no zone) or epoch ms."""
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO-8601 time or epoch ms: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp() * 1000)
