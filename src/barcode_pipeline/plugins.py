"""Extension points the optional harness fills in (Python entry points), so the product never imports it.

``barcode_pipeline.commands``: callables ``register(app)`` that add CLI commands (stack, bench, ...).
``barcode_pipeline.local_stack``: a callable ``up(settings)`` that starts a local development stack;
``run`` calls it when present, and otherwise expects the servers named by ``BP_*`` to be running.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

COMMANDS_GROUP = "barcode_pipeline.commands"
LOCAL_STACK_GROUP = "barcode_pipeline.local_stack"


def command_registrars() -> list[Callable[[Any], None]]:
    """Every installed ``register(app)``, in a stable order."""
    return [ep.load() for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)]


def local_stack_starter() -> Callable[[Any], None] | None:
    """The installed local-stack starter, or None when only the product is installed."""
    found = list(entry_points(group=LOCAL_STACK_GROUP))
    return found[0].load() if found else None
