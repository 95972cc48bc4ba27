"""``barcode-pipeline db upgrade|status``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from barcode_pipeline.config import load_settings
from barcode_pipeline.logs import setup_logging

db_app = typer.Typer(help="Schema migrations of the pipeline's database (MariaDB or MySQL 8).",
                     no_args_is_help=True)  # fmt: skip


@db_app.command()
def upgrade(
    create_database: Annotated[
        bool, typer.Option("--create-database", help="Create the database of BP_DB_URL if it is missing.")
    ] = False,
) -> None:
    """Apply pending migrations in order (idempotent; concurrent runs wait for each other)."""
    from barcode_pipeline.db import migrate

    settings = load_settings()
    setup_logging(settings.log_level, "db")
    if create_database and migrate.create_database(settings.db.url):
        typer.echo("created database")
    applied = migrate.upgrade(settings.db.url)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@db_app.command()
def status() -> None:
    """Applied and pending migrations. Exit code 1 while any is pending."""
    from barcode_pipeline.db import migrate

    settings = load_settings()
    setup_logging(settings.log_level, "db")
    state = migrate.status(settings.db.url)
    table = Table(title="schema migrations")
    for col in ("version", "name", "state", "applied at (UTC)"):
        table.add_column(col)
    for done in state.applied:
        label = "[green]applied[/]"
        if done.ident in state.modified:
            label = "[yellow]applied, file edited since[/]"
        elif done.ident in state.unknown:
            label = "[yellow]applied, unknown to this release[/]"
        table.add_row(done.version, done.name, label, done.applied_at.isoformat(sep=" ", timespec="seconds"))
    for todo in state.pending:
        table.add_row(todo.version, todo.name, "[red]pending[/]", "-")
    Console().print(table)
    raise typer.Exit(1 if state.pending else 0)


@db_app.command()
def partitions(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change; change nothing.")
    ] = False,
) -> None:
    """Create the partitions of barcodes ahead of time and drop those past BP_DB_RETENTION_DAYS."""
    from barcode_pipeline.db import partitions as parts

    settings = load_settings()
    setup_logging(settings.log_level, "db")
    plan = parts.maintain(
        settings.db.url,
        ahead_days=settings.db.partitions_ahead_days,
        retention_days=settings.db.retention_days,
        dry_run=dry_run,
    )
    typer.echo(f"{'would ' if dry_run else ''}{plan.describe()}")


def register(app: typer.Typer) -> None:
    """Add ``db`` and its sub-commands to the root app."""
    app.add_typer(db_app, name="db")
