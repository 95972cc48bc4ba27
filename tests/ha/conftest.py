"""The ``ha`` profile's stack, brought up once per session in its own state directory.

It lives beside the single-node stack (``<BP_STATE_DIR>-ha``), in network namespaces of its own, so
both can run at once. It is stopped at the end of the session if this session started it, and at once
if its start-up fails: three brokers are too heavy to leave running on a shared CI machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.ha_nodes import client_settings
from tests.conftest import _base_settings


def ha_state_dir(base: Path) -> Path:
    return base.with_name(base.name + "-ha")


@pytest.fixture(scope="session")
def ha_stack() -> Iterator[HaStackManager]:
    base = _base_settings()
    settings = base.updated({"state_dir": ha_state_dir(base.state_dir), "stack_profile": "ha"})
    manager = HaStackManager(settings)
    was_up = manager.healthy()
    try:
        manager.up(quiet=True)
        yield manager
    finally:  # after the session, or at once if up() failed half-way: stop what this session started
        if not was_up:
            manager.down()


@pytest.fixture
def ha_settings(ha_stack: HaStackManager) -> HarnessSettings:
    """What the pipeline's services connect with on the ha profile (brokers, Sentinels, WAIT)."""
    return client_settings(ha_stack.settings)
