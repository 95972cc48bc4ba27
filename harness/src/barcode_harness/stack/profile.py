"""Which topology a state directory holds, so one profile never starts over another's data.

A single-node Kafka's internal topics keep replication factor 1 forever and an ``ha`` cluster's
data dirs belong to a 3-voter quorum: neither can be reused by the other, so a mismatch is refused
with a message that says what to do.
"""

from __future__ import annotations

from pathlib import Path

from barcode_pipeline.errors import StackError

PROFILES = ("single", "ha")
MARKER = "profile"


def recorded(state_dir: Path) -> str | None:
    """The profile whose data ``state_dir`` holds, or None for a fresh directory."""
    try:
        return (state_dir / MARKER).read_text().strip() or None
    except OSError:
        pass
    # Directories written before profiles existed hold a single-node stack.
    return "single" if (state_dir / "kafka").is_dir() else None


def claim(state_dir: Path, profile: str) -> None:
    """Record ``profile`` for ``state_dir``; refuse if the directory holds another profile's data."""
    found = recorded(state_dir)
    if found is not None and found != profile:
        raise StackError(
            f"{state_dir.resolve()} holds data of the {found!r} profile, not {profile!r}: "
            f"use --profile {found} (BP_STACK_PROFILE={found}), or `barcode-pipeline stack reset "
            f"--profile {found}` to wipe it, or another BP_STATE_DIR",
            component="stack",
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / MARKER).write_text(profile + "\n")
