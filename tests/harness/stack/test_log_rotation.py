"""The stack's server logs are bounded across restarts (stack/base.py rotate_logs)."""

from __future__ import annotations

from pathlib import Path

from barcode_harness.stack.base import rotate_logs


def test_a_log_over_the_bound_rotates_and_only_three_generations_stay(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    small = tmp_path / "stdout.log"
    small.write_text("short\n")
    for generation in range(5):
        log.write_text(f"run {generation}\n" + "x" * 200)
        assert rotate_logs(tmp_path, max_bytes=100, keep=3) == [log]
        assert not log.exists()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["server.log.1", "server.log.2", "server.log.3", "stdout.log"]
    assert (tmp_path / "server.log.1").read_text().startswith("run 4")
    assert (tmp_path / "server.log.3").read_text().startswith("run 2")
    assert rotate_logs(tmp_path, max_bytes=100, keep=3) == []  # nothing over the bound: untouched
    assert rotate_logs(tmp_path / "missing") == []
