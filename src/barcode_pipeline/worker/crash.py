"""Fault-injection hooks of the persistence worker: die like ``kill -9`` at its two critical moments.

The crash tests and the fault-injection suite set these variables on a worker process; they are
read once, at the worker's entrypoint. Before COMMIT the server rolls the batch back; after COMMIT
and before XACK the batch is stored but redelivered, which the UNIQUE key must absorb.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

CRASH_BEFORE_COMMIT_ENV = "BP_WORKER_CRASH_BEFORE_COMMIT"
CRASH_AFTER_COMMIT_ENV = "BP_WORKER_CRASH_AFTER_COMMIT"
CRASH_EXIT_CODE = 137  # what a SIGKILL looks like to a supervisor


@dataclass(frozen=True, slots=True)
class CrashPoints:
    before_commit: bool = False  # after the INSERT, before COMMIT
    after_commit: bool = False  # after COMMIT, before XACK

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CrashPoints:
        """``"1"`` arms a hook."""
        return cls(
            before_commit=env.get(CRASH_BEFORE_COMMIT_ENV) == "1",
            after_commit=env.get(CRASH_AFTER_COMMIT_ENV) == "1",
        )


def crash(where: str) -> None:
    """Exit at once, without cleanup, as a SIGKILLed process would."""
    log.error("crash hook: exiting with %d %s", CRASH_EXIT_CODE, where)
    os._exit(CRASH_EXIT_CODE)
