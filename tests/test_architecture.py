"""The product stands apart from its development harness: imports point one way only.

``barcode_pipeline`` (the shipped runtime) must never import ``barcode_harness`` (local stack,
scanner simulator, benchmarks, fault injection) or a library only the harness depends on, so that
``pip install .`` gives a product that runs without them.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "src" / "barcode_pipeline"
HARNESS_ONLY = {"barcode_harness", "matplotlib", "hdrh", "aiohttp", "pytest", "httpx"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at any depth (function-local imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_imported_modules_sees_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\ndef f():\n    from barcode_harness.stack import manager\n")
    assert imported_modules(source) == {"os", "barcode_harness"}


def test_runtime_never_imports_the_harness() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & HARNESS_ONLY)
        for path in sorted(RUNTIME.rglob("*.py"))
        if imported_modules(path) & HARNESS_ONLY
    }
    assert offenders == {}
    assert len(list(RUNTIME.rglob("*.py"))) > 40  # the walk really read the package


def test_runtime_dependencies_hold_no_plotting_or_benchmarking_library() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("[")[0].split("=")[0].strip().lower() for dep in project["dependencies"]}
    assert names.isdisjoint({"matplotlib", "hdrhistogram", "aiohttp", "barcode-pipeline-harness"})
    harness = tomllib.loads((ROOT / "harness" / "pyproject.toml").read_text())["project"]
    assert "barcode-pipeline" in harness["dependencies"]


def test_the_harness_commands_are_entry_points_of_the_harness() -> None:
    from barcode_pipeline.plugins import COMMANDS_GROUP, LOCAL_STACK_GROUP, command_registrars

    harness = tomllib.loads((ROOT / "harness" / "pyproject.toml").read_text())["project"]
    assert set(harness["entry-points"][COMMANDS_GROUP]) == {
        "stack",
        "scanner",
        "bench",
        "chaos",
        "demo",
        "snapshot",
    }
    assert set(harness["entry-points"][LOCAL_STACK_GROUP]) == {"up"}
    assert len(command_registrars()) == 6  # installed in this environment, so the CLI has them


ROUTE_AND_JOB_LITERALS = {"/health", "/ready", "/metrics", "bp-ingest", "bp-supervisor", "bp-processor",
                          "bp-worker", "bp-backlog", "bp-legacy"}  # fmt: skip


def test_route_and_job_names_live_in_names_only() -> None:
    """A route or a Prometheus job spelled out elsewhere drifts from the one in names.py."""
    offenders = {
        f"{path.relative_to(ROOT)}:{node.lineno}": node.value
        for path in sorted(RUNTIME.rglob("*.py"))
        if path.name != "names.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in ROUTE_AND_JOB_LITERALS
    }
    assert offenders == {}
