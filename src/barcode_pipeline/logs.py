"""Logging set-up for entrypoints.

``text`` (the default): one line per record, with the service name as prefix. ``json``
(``BP_LOG_FORMAT=json``, for log shippers): one JSON object per line with ``ts``, ``level``,
``service``, ``instance`` (e.g. the worker's name), ``pid``, ``logger`` and ``event`` (the message),
plus ``exception`` when there is one.

Every line goes through :func:`mask`: passwords in URLs and scanner keys never reach a log, whoever
logs them (our code, a library, an exception's text).
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime

import orjson

_SERVICE = re.compile(r"^(?P<service>[^\[]+)(?:\[(?P<instance>[^\]]*)\])?$")

# The user runs to the first ":" (it may hold "@", as in "user@server"), the password to the last
# "@" of the token: one written unencoded may hold "@", "/" or ":", and stopping at the first of
# them would show the rest. Two URLs written without a space between them are over-masked.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/\s]*:)(?P<secret>\S+)(?=@)", re.IGNORECASE)
_SCANNER_KEY = re.compile(r"bpk_[A-Za-z0-9_-]{8,}")
_extra_secrets: set[str] = set()
MASK = "***"


def add_secret(value: str) -> None:
    """Mask this exact value too (e.g. a SASL password that is no URL), in this process."""
    if len(value) >= 4:  # shorter values would mask ordinary words
        _extra_secrets.add(value)


def mask(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>{MASK}", text)
    text = _SCANNER_KEY.sub("bpk_" + MASK, text)
    for secret in _extra_secrets:
        text = text.replace(secret, MASK)
    return text


class MaskingFormatter(logging.Formatter):
    """Masks the whole formatted record, its traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


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
            "event": mask(record.getMessage()),
        }
        if self.instance:
            data["instance"] = self.instance
        if record.exc_info:
            data["exception"] = mask(self.formatException(record.exc_info))
        # Masked field by field: on the serialised line a URL's greedy match could run into the
        # next field and break the JSON.
        return orjson.dumps(data).decode()


def setup_logging(level: str = "INFO", service: str = "bp", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(MaskingFormatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
