"""``barcode-pipeline stack up|down|status|reset|logs|env``."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from barcode_harness.settings import load_harness_settings
from barcode_harness.stack import profile as profiles
from barcode_harness.stack import secure as transport
from barcode_harness.stack.manager import COMPONENT_NAMES, StackManager
from barcode_harness.stack.managers import manager_for, secure_manager
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import setup_logging

stack_app = typer.Typer(help="Local infrastructure on loopback: Kafka (KRaft), Redis (AOF), MariaDB.",
                        no_args_is_help=True)  # fmt: skip


ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", help="single (default) or ha (3 Kafka, Redis + 2 replicas + 3 Sentinels, "
                 "in network namespaces); default BP_STACK_PROFILE, else what the state dir holds"),
]  # fmt: skip
SECURE_HELP = (
    "TLS on every server and one least-privilege user per role (CA, certificates and passwords under the "
    "state dir); default BP_STACK_SECURE. Recorded: later commands need no flag."
)


def _manager(
    profile: str | None = None, *, starting: bool = False, monitoring: bool = False, secure: bool = False
) -> StackManager:
    """The manager of the chosen profile. Commands other than ``up`` act on the profile (and transport)
    the state directory holds unless one is named, so ``stack down`` needs no flag."""
    if profile is not None and profile not in profiles.PROFILES:
        raise ConfigError(f"--profile: choose one of {', '.join(profiles.PROFILES)} (got {profile!r})")
    settings = load_harness_settings()
    if profile is None and not starting:
        profile = profiles.recorded(settings.state_dir)
    settings = load_harness_settings(stack_profile=profile)
    setup_logging(settings.log_level, "stack")
    if transport.wanted(settings, secure):
        return secure_manager(settings, monitoring=monitoring)
    return manager_for(settings, monitoring=monitoring)


def _print_status(manager: StackManager) -> bool:
    table = Table("component", "address", "pid", "health", "detail", title="barcode-pipeline stack")
    ok = True
    for s in (*manager.status(), *manager.monitoring_status()):
        ok &= s.healthy
        health = "[green]healthy[/]" if s.healthy else "[yellow]unhealthy[/]" if s.running else "[red]down[/]"
        table.add_row(s.name, s.address, str(s.pid or "-"), health, s.detail)
    Console().print(table)
    return ok


@stack_app.command()
def up(
    profile: ProfileOption = None,
    monitoring: Annotated[bool, typer.Option("--monitoring", help="Also Prometheus, its exporters.")] = False,
    secure: Annotated[bool, typer.Option("--secure", help=SECURE_HELP)] = False,
) -> None:
    """Start Kafka, Redis and MariaDB (idempotent) and wait until each really answers."""
    manager = _manager(profile, starting=True, monitoring=monitoring, secure=secure)
    t0 = time.monotonic()
    timings = manager.up()
    detail = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    typer.echo(f"stack up in {time.monotonic() - t0:.1f}s ({detail})")
    _print_status(manager)


@stack_app.command()
def down(profile: ProfileOption = None) -> None:
    """Stop all components cleanly; data is kept."""
    _manager(profile).down()
    typer.echo("stack down")


@stack_app.command()
def status(
    check: Annotated[bool, typer.Option("--check", help="Only set the exit code.")] = False,
    profile: ProfileOption = None,
) -> None:
    """Each component, its address, pid, health and role. Exit code 1 unless all are healthy."""
    manager = _manager(profile)
    ok = manager.healthy() if check else _print_status(manager)
    raise typer.Exit(0 if ok else 1)


@stack_app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    profile: ProfileOption = None,
) -> None:
    """Stop everything and wipe the state directory."""
    manager = _manager(profile)
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete {manager.settings.state_dir.resolve()}?", abort=True)
    manager.reset()
    typer.echo("stack reset")


@stack_app.command()
def logs(
    component: Annotated[str | None, typer.Argument(help=f"One of {', '.join(COMPONENT_NAMES)}.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n")] = 40,
    profile: ProfileOption = None,
) -> None:
    """Show the tail of a component's log (all components when none is named)."""
    manager = _manager(profile)
    for name in [component] if component else list(manager.components):
        comp = manager.component(name)
        typer.echo(f"==> {comp.logfile} <==")
        typer.echo("\n".join(comp.log_tail(lines)))


@stack_app.command()
def env(
    profile: ProfileOption = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="A secured stack's secrets inline, not as BP_*_FILE paths.")
    ] = False,
) -> None:
    """Connection settings as shell exports: eval "$(barcode-pipeline stack env)". A secured stack's
    secrets are 0600 files named by BP_*_FILE variables, so the output can be shown or logged."""
    typer.echo(_manager(profile).env(show_secrets=show_secrets))


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")
