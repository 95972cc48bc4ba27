"""Logging set-up for entrypoints.

``text`` (the default): one line per record, with the service name as prefix. ``json``
(``BP_LOG_FORMAT=json``, for log shippers): one JSON object per line with ``ts``, ``level``,
``service``, ``instance`` (e.g. the worker's name), ``pid``, ``logger`` and ``event`` (the message),
plus ``exception`` when there is one.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

_SERVICE = re.compile(r"^(?P<service>[^\[]+)(?:\[(?P<instance>[^\]]*)\])?$")


class JsonFormatter(logging.Formatter):
    """One self-contained JSON object per record (newlines in messages stay inside the string)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        match = _SERVICE.match(service)
        self.service = match.group("service") if match else service
        self.instance = match.group("instance") if match else None

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "pid": record.process,
            "logger": record.name,
            "event": record.getMessage(),
        }
        if self.instance:
            data["instance"] = self.instance
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


def setup_logging(level: str = "INFO", service: str = "bp", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
