"""CLI commands of this subsystem (registered by ``barcode_pipeline.cli``)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this subsystem's commands to the root app."""
