"""The secured stack (``stack up --secure``), one per session, next to the plaintext one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from barcode_harness.settings import HarnessSettings
from barcode_pipeline.adapters.db import parse_db_url

ROOT = Path(__file__).resolve().parents[3]
# The secured stack's ports are the plaintext stack's plus this, so both run side by side.
PORT_OFFSET = int(os.environ.get("BP_TEST_SECURE_PORT_OFFSET", "100"))


def secure_base_settings() -> HarnessSettings:
    """Where the secured test stack lives: ``<BP_STATE_DIR>-secure``, on the offset ports."""
    plain = HarnessSettings(state_dir=Path(os.environ.get("BP_STATE_DIR", ROOT / ".stack")))
    redis = urlsplit(plain.redis.url)
    db = parse_db_url(plain.db.url)
    kafka_host, _, kafka_port = plain.kafka.bootstrap.split(",")[0].rpartition(":")
    return plain.updated(
        {
            "state_dir": plain.state_dir.resolve().with_name(plain.state_dir.resolve().name + "-secure"),
            "kafka_bootstrap": f"{kafka_host}:{int(kafka_port) + PORT_OFFSET}",
            "kafka_controller_port": plain.kafka_controller_port + PORT_OFFSET,
            "redis_url": f"redis://{redis.hostname}:{(redis.port or 6379) + PORT_OFFSET}/0",
            "db_url": f"mysql://barcode:barcode@{db.host}:{db.port + PORT_OFFSET}/{db.database}",
            "ingest_port": plain.ingest.port + PORT_OFFSET,
            "legacy_port": plain.legacy.port + PORT_OFFSET,
            "metrics_port_base": plain.monitoring.metrics_port_base + PORT_OFFSET,
            "exporter_port": plain.monitoring.exporter_port + PORT_OFFSET,
        }
    )


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[HarnessSettings]:
    """A running secured stack; the settings are its admin's, with every role's credentials set.

    Stopped at the end of the session if this session started it (as ``tests/ha``'s stack is), also
    when tests fail or ``up`` fails half-way: left running, it holds its ports against the next run.
    """
    from barcode_harness.stack.managers import secure_manager

    manager = secure_manager(secure_base_settings())
    was_up = manager.healthy()
    try:
        manager.up(quiet=True)
        yield manager.settings
    finally:
        if not was_up:
            manager.down()
