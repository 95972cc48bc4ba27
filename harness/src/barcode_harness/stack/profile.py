"""Which topology (and transport) a state directory holds, so one never starts over another's data:
a single node's topics keep RF 1 forever, an ``ha`` cluster's data dirs belong to a 3-voter quorum."""

from __future__ import annotations

from pathlib import Path

from barcode_pipeline.errors import StackError

PROFILES = ("single", "ha")
MARKER = "profile"


def read_marker(state_dir: Path, marker: str, legacy: str) -> str | None:
    """What ``state_dir`` records under ``marker``: ``legacy`` for a directory written before the
    marker existed (it holds a Kafka), None for a fresh one."""
    try:
        return (state_dir / marker).read_text().strip() or None
    except OSError:
        return legacy if (state_dir / "kafka").is_dir() else None


def record(state_dir: Path, marker: str, value: str, found: str | None, refusal: str) -> None:
    """Record ``value`` under ``marker``; raise ``refusal`` if ``state_dir`` recorded another (``found``)."""
    if found is not None and found != value:
        raise StackError(refusal, component="stack")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / marker).write_text(value + "\n")


def recorded(state_dir: Path) -> str | None:
    """The profile whose data ``state_dir`` holds, or None for a fresh directory."""
    return read_marker(state_dir, MARKER, legacy="single")


def claim(state_dir: Path, profile: str) -> None:
    """Record ``profile`` for ``state_dir``; refuse if the directory holds another profile's data."""
    found = recorded(state_dir)
    refusal = (
        f"{state_dir.resolve()} holds data of the {found!r} profile, not {profile!r}: "
        f"use --profile {found} (BP_STACK_PROFILE={found}), or `barcode-pipeline stack reset "
        f"--profile {found}` to wipe it, or another BP_STATE_DIR"
    )
    record(state_dir, MARKER, profile, found, refusal)
