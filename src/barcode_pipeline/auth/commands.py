"""``barcode-pipeline keys create|list|revoke``: scanner API keys (registered by ``barcode_pipeline.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

from barcode_pipeline.config import load_settings
from barcode_pipeline.logs import setup_logging

keys_app = typer.Typer(help="Scanner API keys: ingest accepts scans only with one (BP_INGEST_AUTH=required).",
                       no_args_is_help=True)  # fmt: skip


@keys_app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="The key's name: what logs and metrics show.")],
    devices: Annotated[
        str,
        typer.Option("--devices", help="Comma-separated glob patterns on deviceId, e.g. SEOUL-CENTER-PC-*."),
    ],
    rate: Annotated[
        int | None,
        typer.Option(
            "--rate",
            min=0,
            help="Its own limit in scans/s across the ingest (0: none); default: BP_INGEST_KEY_RATE.",
        ),
    ] = None,
) -> None:
    """Create a key and print its secret: this is the only time it is shown (only a digest is stored)."""
    from barcode_pipeline.auth.store import create_key

    settings = load_settings()
    setup_logging(settings.log_level, "keys")
    secret = create_key(settings.db.url, name, devices, rate=rate)
    typer.echo(secret)
    typer.echo(f"created key {name!r}; the secret above is shown only once", err=True)


@keys_app.command("list")
def list_keys() -> None:
    """Every key: name, device patterns, rate limit, created, revoked. Never a secret."""
    from rich.console import Console
    from rich.table import Table

    from barcode_pipeline.auth.store import load_keys

    settings = load_settings()
    setup_logging(settings.log_level, "keys")
    table = Table(title="scanner keys")
    for col in ("name", "devices", "scans/s", "created (UTC)", "state"):
        table.add_column(col)
    default = f"{settings.auth.key_rate:g} (default)" if settings.auth.key_rate else "no limit"
    for key in load_keys(settings.db.url, timeout_s=10):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M:%S}" if key.revoked_at else "active"
        rate = default if key.rate is None else (f"{key.rate:g}" if key.rate else "no limit")
        table.add_row(key.name, ",".join(key.patterns), rate, f"{key.created_at:%Y-%m-%d %H:%M:%S}", state)
    Console(width=200).print(table)


@keys_app.command()
def revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke a key: every ingest process refuses it within BP_INGEST_AUTH_REFRESH_S (2 s), no restart."""
    from barcode_pipeline.auth.store import revoke_key

    settings = load_settings()
    setup_logging(settings.log_level, "keys")
    revoke_key(settings.db.url, name)
    typer.echo(f"revoked key {name!r}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
