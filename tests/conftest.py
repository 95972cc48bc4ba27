"""Shared fixtures. Integration tests run against the real local stack, which the session brings up.

There is no skip path: if Kafka, Redis or MariaDB cannot be started or reached, the tests that
need them error out (in CI and locally alike), so a missing service can never pass silently.
"""

from __future__ import annotations

import faulthandler
import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from barcode_harness.settings import HarnessSettings
from tests.stack_helpers import SMALL_REDIS_DISK_BYTES, ScratchRedis

IN_CI = os.environ.get("CI") == "true"
ROOT = Path(__file__).resolve().parents[1]

# pytest-timeout (300 s) interrupts a test from Python, which cannot happen while a C call holds the
# GIL (seen once: confluent-kafka's rebalance callback blocked in rd_kafka_assign during a
# consumer's close). faulthandler's timer is a C thread: it writes every thread's stack to this
# file and ends the run, so CI goes red with the stacks (the Makefile prints them) instead of
# hanging until its own limit.
HARD_TIMEOUT_S = 420
# One report per pytest process: scripts/test.sh runs the tests on servers of their own in a second one.
_PART = os.environ.get("BP_TEST_PART")
HANG_REPORT = ROOT / ".stack" / (f"pytest-hang-{_PART}.txt" if _PART else "pytest-hang.txt")


# The address in-process test clients come from: loopback, as a local scanner or Prometheus would
# (starlette's default "testclient" is not an address, so /metrics would refuse it: BP_METRICS_FROM).
LOOPBACK_CLIENT = ("127.0.0.1", 50000)
# Fixtures that bring up servers of their own, never touching the shared stack: a test using one is
# marked ``own_servers``, and scripts/test.sh runs those in a second pytest beside the rest.
OWN_SERVER_FIXTURES = frozenset({"ha_stack", "chaos_stack"})
# Fixtures that reach real servers: a test using one, however indirectly, is an integration test.
SERVICE_FIXTURES = frozenset({"stack_settings", "redis_on_small_disk", "scratch_redis"}) | OWN_SERVER_FIXTURES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse the run if a test that needs real services is not marked ``integration`` (``-m "not
    integration"`` would otherwise run it, or a reader would take it for a unit test); mark the tests
    on servers of their own."""
    for item in items:
        if OWN_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.own_servers)
    unmarked = [
        item.nodeid
        for item in items
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError("needs real services but is not marked integration: " + ", ".join(unmarked))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    HANG_REPORT.parent.mkdir(parents=True, exist_ok=True)
    with HANG_REPORT.open("w") as report:
        report.write(f"{item.nodeid} did not end within {HARD_TIMEOUT_S} s; the run was ended here\n")
        report.flush()
        faulthandler.dump_traceback_later(HARD_TIMEOUT_S, exit=True, file=report)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
    HANG_REPORT.unlink(missing_ok=True)


def _base_settings() -> HarnessSettings:
    state = Path(os.environ.get("BP_STATE_DIR", ROOT / ".stack"))
    return HarnessSettings(state_dir=state)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[HarnessSettings]:
    """HarnessSettings pointing at a running local stack (started here if it is not up yet)."""
    from barcode_harness.stack.manager import StackManager
    from barcode_pipeline.db.migrate import upgrade

    settings = _base_settings()
    StackManager(settings).up(quiet=True)
    upgrade(settings.db.url)  # a fresh stack's database has no tables yet; the suites expect the schema
    yield settings


@pytest.fixture(scope="session")
def ingest_key(stack_settings: HarnessSettings) -> str:
    """A scanner key for every device in the stack's database: what the tests' clients send to ingest."""
    from barcode_pipeline.auth.store import create_key
    from barcode_pipeline.db.migrate import upgrade

    upgrade(stack_settings.db.url)
    return create_key(stack_settings.db.url, "test-suite", "*", rate=0, replace=True)  # many scanners


def keyed(settings: HarnessSettings, name: str) -> HarnessSettings:
    """``settings`` with a scanner key for every device in its own database (migrated first), for tests
    that run ingest on a database of their own."""
    from barcode_pipeline.auth.store import create_key
    from barcode_pipeline.db.migrate import upgrade

    upgrade(settings.db.url)
    return settings.updated({"ingest_api_key": create_key(settings.db.url, name, "*", rate=0, replace=True)})


@pytest.fixture
def make_settings(stack_settings: HarnessSettings) -> Callable[..., HarnessSettings]:
    """Factory: the stack's settings with per-test overrides (e.g. another Redis DB or database)."""

    def factory(**overrides: Any) -> HarnessSettings:
        return stack_settings.updated(overrides)

    return factory


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo a CLI's ``setup_logging`` after each test.

    It points the root handler at the ``sys.stderr`` of the moment, which under pytest is a capture
    stream that is closed after the test; worker threads logging later then print "Logging error".
    """
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def redis_on_small_disk(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scratch redis-server (AOF on, ``appendfsync everysec`` as the stack runs it) on a 16 MiB tmpfs.

    (With ``always`` Redis exits on a failed AOF write instead of refusing writes.)"""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_REDIS_DISK_BYTES}", "tmpfs", str(data)], check=True
    )
    server = ScratchRedis(data)
    try:
        server.start()
        yield server.url, data
    finally:
        server.kill()
        subprocess.run(["umount", str(data)], check=False)


@pytest.fixture
def scratch_redis(tmp_path: Path) -> Iterator[ScratchRedis]:
    """A redis-server of the test's own that it may kill and restart (``appendfsync always``, so a
    snapshot of its data taken between writes is whole)."""
    data = tmp_path / "redis"
    data.mkdir()
    server = ScratchRedis(data, appendfsync="always")
    try:
        server.start()
        yield server
    finally:
        server.kill()
