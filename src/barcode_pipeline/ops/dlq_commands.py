"""``barcode-pipeline dlq list|show|replay``: the operator's handle on dead letters."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from barcode_pipeline import names
from barcode_pipeline.clitime import parse_time_ms
from barcode_pipeline.config import load_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging

HELP = """Dead letters: list, inspect and replay them.

Two stores: `barcode:dlq` (Redis stream, --source dlq, the default) holds entries a persistence
worker could not store: unknown device, delivered too often, refused by the database. The Kafka
topic `barcode-events.dlt` (--source dlt) holds records the processor could not decode or validate.
Every dead letter carries its reason.

Typical use: `dlq list` to see what failed and why; fix the cause (for an unknown device, add its
row to device_center_mapping); then `dlq replay --reason "unknown device"` to send the entries
back through the pipeline. Replays are idempotent: the database's UNIQUE index absorbs a scan
that is already stored.
"""

dlq_app = typer.Typer(name="dlq", help=HELP, no_args_is_help=True)


class SourceChoice(StrEnum):
    dlq = "dlq"
    dlt = "dlt"


SourceOpt = Annotated[
    SourceChoice,
    typer.Option(
        "--source", help="dlq: the Redis stream barcode:dlq; dlt: the Kafka topic barcode-events.dlt."
    ),
]


def _since(text: str | None) -> int | None:
    return None if text is None else parse_time_ms(text)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


@dlq_app.command("list")
def list_cmd(
    source: SourceOpt = SourceChoice.dlq,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many (oldest first).")] = 50,
    reason: Annotated[str | None, typer.Option(help="Only dead letters whose reason contains this.")] = None,
    since: Annotated[str | None, typer.Option(help="Only from this time on (ISO-8601 or epoch ms).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List dead letters with their reason, origin and scan."""
    from barcode_pipeline.ops import dlq, dlt

    settings = load_settings()
    setup_logging("WARNING", "dlq")
    lister = dlq.list_dlq if source == SourceChoice.dlq else dlt.list_dlt
    letters = lister(settings, since_ms=_since(since), limit=limit, reason=reason)
    if as_json:
        typer.echo(orjson.dumps([x.to_dict() for x in letters], option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(
        title=f"dead letters in {names.DLQ_STREAM if source == SourceChoice.dlq else names.DLT_TOPIC}"
    )
    for column in ("id", "time", "device", "scan id", "reason", "origin"):
        table.add_column(column, overflow="fold")
    for x in letters:
        table.add_row(x.id, _when(x.time_ms), x.device_id or "-", x.scan_id or "-", x.reason, x.origin)
    Console().print(table)
    typer.echo(f"{len(letters)} shown" + (" (limit reached; use --limit)" if len(letters) == limit else ""))


@dlq_app.command("show")
def show_cmd(
    letter_id: Annotated[
        str, typer.Argument(metavar="ID", help="DLQ entry id, or PARTITION:OFFSET in the DLT.")
    ],
    source: SourceOpt = SourceChoice.dlq,
) -> None:
    """Everything one dead letter holds: original fields or record value, reason, origin, headers."""
    from barcode_pipeline.ops import dlq, dlt

    settings = load_settings()
    setup_logging("WARNING", "dlq")
    letter = (
        dlq.get_dlq(settings, letter_id) if source == SourceChoice.dlq else dlt.get_dlt(settings, letter_id)
    )
    if letter is None:
        typer.echo(f"no dead letter {letter_id} in {source.value}", err=True)
        raise typer.Exit(1)
    typer.echo(orjson.dumps(letter.to_dict(), option=orjson.OPT_INDENT_2).decode())


@dlq_app.command("replay")
def replay_cmd(
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID]...", help="Dead letters to replay (see `dlq list`).")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Replay every dead letter (of --reason, if given).")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="Replay those whose reason contains this.")] = None,
    source: SourceOpt = SourceChoice.dlq,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be replayed.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="DLQ: replay even if the cause looks unfixed (unmapped device, malformed entry)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send dead letters back through the pipeline, once their cause is fixed.

    DLQ: each entry's original fields are re-added to its original shard stream and the entry is
    deleted from the DLQ (atomically). Entries of a device that still has no center mapping, and
    malformed ones, are skipped unless --force. DLT: records that decode and validate now are
    re-produced to barcode-events (the DLT itself is left as is; a second replay is harmless).
    Exits 2 when anything was skipped, so a script notices a cause that is still there.
    """
    from barcode_pipeline.ops import dlq, dlt

    if not ids and not all_ and not reason:
        raise ConfigError("name the dead letters to replay, or use --reason TEXT or --all")
    if ids and all_:
        raise ConfigError("give IDs or --all, not both")
    settings = load_settings()
    setup_logging("WARNING", "dlq")
    if source == SourceChoice.dlq:
        outcome = dlq.replay_dlq(
            settings, ids=ids or None, reason=reason, everything=all_, dry_run=dry_run, force=force
        )
    else:  # the DLT keeps no cause that --force could override: what decodes now is replayed
        outcome = dlt.replay_dlt(settings, ids=ids or None, reason=reason, everything=all_, dry_run=dry_run)
    if as_json:
        typer.echo(orjson.dumps(outcome.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        verb = "would replay" if dry_run else "replayed"
        for letter_id, target in outcome.replayed:
            typer.echo(f"{verb} {letter_id} -> {target}")
        for letter_id, why in outcome.skipped:
            typer.echo(f"skipped {letter_id}: {why}")
        typer.echo(f"{len(outcome.replayed)} {verb}, {len(outcome.skipped)} skipped")
    raise typer.Exit(2 if outcome.skipped and not dry_run else 0)


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` sub-app to the root app."""
    app.add_typer(dlq_app, name="dlq")
