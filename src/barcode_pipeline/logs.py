"""Logging set-up for entrypoints (one line per record, with the service name as prefix)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO", service: str = "bp") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
        force=True,
    )
