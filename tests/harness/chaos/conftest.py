"""A private stack for fault injection, on its own ports and state directory.

The chaos tests SIGKILL Kafka, Redis and MariaDB, flush Redis and rewind consumer groups, so they
must never touch the stack the other suites share: this stack lives under the pytest temporary
directory, listens on dedicated ports and is stopped at the end. The package's modules share it
and one pipeline on it (each scenario and schedule starts from a drained pipeline with everything
back up, so none depends on another's leftovers). There is no skip path: if it cannot start, the
tests error out.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from barcode_harness.chaos.context import ChaosParams
from barcode_harness.chaos.harness import ChaosEnv, chaos_env
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.manager import StackManager

# Away from the shared stack (9092/6380/3307, ingest 8081), and below the kernel's ephemeral range
# (32768-60999 on Linux): a listening port in that range can be taken by any outgoing connection.
KAFKA_PORT = 19392
KAFKA_CONTROLLER_PORT = 19393
REDIS_PORT = 16391
DB_PORT = 13317
INGEST_PORT = 18391

# CI scale: the documented run holds each fault for 20 s; here 4 s keeps the suite within minutes
# while every mechanism (restart, takeover, replay, dedup) still has to work for real. The warm-up
# is 1 s: the harness already waits for the first acknowledged scan before it starts counting.
# Drain: the promise itself (30 s after the heal). A stall such as issue 9's (a processor alive but
# consuming nothing) shows only as a slow drain, so a looser bound would hide it; the short holds
# leave a smaller backlog than the documented run, which keeps 30 s safe on a loaded machine.
# Takeover: 15 s against the 10 s target. It is mostly waiting (the heartbeat TTL, 5 s, then the
# next 1 s sweep); the 5 s above the target are for a 2-core CI machine running every server and
# service at once, where the documented run measures 4-6 s.
CI_PARAMS = ChaosParams(
    rate=150.0, warmup_s=1.0, hold_s=4.0, drain_timeout_s=90.0, drain_target_s=30.0, takeover_target_s=15.0
)


def chaos_settings(state_dir: Path) -> HarnessSettings:
    """Every address and port given explicitly: nothing may fall back to the shared stack."""
    return HarnessSettings(
        state_dir=state_dir,
        kafka_bootstrap=f"127.0.0.1:{KAFKA_PORT}",
        kafka_controller_port=KAFKA_CONTROLLER_PORT,
        redis_url=f"redis://127.0.0.1:{REDIS_PORT}/0",
        db_url=f"mysql://barcode:barcode@127.0.0.1:{DB_PORT}/barcode",
        ingest_host="127.0.0.1",
        ingest_port=INGEST_PORT,
        workers=2,
        # The broker's minimum. A rewind (the duplicates scenario) waits for the stopped processor's
        # static membership to expire: 6 s instead of 10, twice.
        kafka_session_timeout_ms=6_000,
        log_level="INFO",
    )


@pytest.fixture(scope="package")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessSettings]:
    """The private stack, up for this module and stopped afterwards (its data stays in tmp)."""
    settings = chaos_settings(tmp_path_factory.mktemp("chaos-stack"))
    stack = StackManager(settings)
    try:
        stack.up(quiet=True)
        yield settings
    finally:
        stack.down()
        # The servers' logs stay for a post-mortem; their data (~300 MB, mostly InnoDB's redo log)
        # would otherwise pile up in pytest's retained temporary directories.
        for component in stack.components.values():
            shutil.rmtree(component.home / "data", ignore_errors=True)


@pytest.fixture(scope="package")
def chaos_pipeline(
    chaos_stack: HarnessSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosEnv]:
    """Ingest, processor and two workers on the private stack, shared by the package's runs."""
    with chaos_env(chaos_stack, tmp_path_factory.mktemp("chaos-run")) as env:
        yield env
