"""``barcode-pipeline``: a thin CLI. Each subsystem registers its own commands.

Settings are read here, once, and passed down explicitly. Errors the pipeline raises on
purpose become one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from barcode_pipeline.errors import PipelineError
from barcode_pipeline.logs import mask
from barcode_pipeline.plugins import command_registrars

app = typer.Typer(
    name="barcode-pipeline",
    help="Asynchronous, exactly-once barcode scan ingest: HTTP -> Kafka -> Redis Streams -> MariaDB/MySQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The product's subsystems that contribute commands; each module exposes ``register(app)``.
_COMMAND_MODULES = (
    "barcode_pipeline.db.commands",
    "barcode_pipeline.auth.commands",
    "barcode_pipeline.ingest.commands",
    "barcode_pipeline.processor.commands",
    "barcode_pipeline.worker.commands",
    "barcode_pipeline.run.commands",
    "barcode_pipeline.legacy.commands",
    "barcode_pipeline.ops.commands",
    "barcode_pipeline.ops.dlq_commands",
    "barcode_pipeline.ops.capacity_commands",
    "barcode_pipeline.monitoring.commands",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)
# The development harness (stack, scanner, bench, chaos, demo) adds its commands when installed.
for _register in command_registrars():
    _register(app)


def main() -> None:
    try:
        app()
    except PipelineError as exc:
        logging.getLogger("barcode_pipeline").debug("failed", exc_info=True)
        sys.stderr.write(f"error: {mask(str(exc))}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
