"""Which topology and transport a state directory holds, so one never starts over another's data: a
single node's topics keep RF 1 forever, an ``ha`` cluster's data dirs belong to a 3-voter quorum, a
secured stack's clients need its settings."""

from __future__ import annotations

from pathlib import Path

from barcode_pipeline.errors import StackError

PROFILES = ("single", "ha")
# marker file -> what a directory written before the markers existed (it holds a Kafka) holds
_LEGACY = {"profile": "single", "transport": "plaintext"}
_REFUSAL = (
    "{dir} holds data of the {found!r} profile, not {value!r}: use --profile {found} (BP_STACK_PROFILE="
    "{found}), or `barcode-pipeline stack reset --profile {found}` to wipe it, or another BP_STATE_DIR"
)


def recorded(state_dir: Path, marker: str = "profile") -> str | None:
    """What ``state_dir`` records under ``marker`` ("profile" or "transport"), None for a fresh one."""
    try:
        return (state_dir / marker).read_text().strip() or None
    except OSError:
        return _LEGACY[marker] if (state_dir / "kafka").is_dir() else None


def claim(state_dir: Path, value: str, marker: str = "profile", refusal: str = _REFUSAL) -> None:
    """Record ``value`` under ``marker``; refuse (``refusal`` formatted with ``dir``, ``found`` and
    ``value``) if the directory holds another's data."""
    found = recorded(state_dir, marker)
    if found is not None and found != value:
        raise StackError(refusal.format(dir=state_dir.resolve(), found=found, value=value), component="stack")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / marker).write_text(value + "\n")
