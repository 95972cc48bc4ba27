"""Logging set-up for entrypoints (one line per record, with the service name as prefix).

Every line goes through :func:`mask`: passwords in URLs and scanner keys never reach a log, whoever
logs them (our code, a library, an exception's text).
"""

from __future__ import annotations

import logging
import re
import sys

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)", re.IGNORECASE
)
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


def setup_logging(level: str = "INFO", service: str = "bp") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
