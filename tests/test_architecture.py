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
HARNESS = ROOT / "harness" / "src" / "barcode_harness"
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


# The product's layers, lowest first. An import may point into a lower layer, never up, and never
# sideways into another package of its own layer (the foundation's small modules excepted); and no
# two modules may import each other, however indirectly.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "barcode_pipeline names errors logs retry clitime plugins lua",  # foundation (lua: scripts as data)
        "domain",  # scans, ids, records, device patterns, trusted networks: pure rules
        "config liveness",
        "adapters",  # Kafka, Redis (and Sentinel), the database connection
        "db probes web",  # migrations and SQL; measurements of the pipeline; the HTTP contract
        "auth",
        "ingest processor worker legacy monitoring",  # the services
        "run",  # the supervisor, its liveness watchdog, the pipeline's start-up
        "ops",  # operator commands
        "cli",
        "__main__",
    )
)
FOUNDATION = LAYERS[0]


def _module(path: Path, package: Path = RUNTIME) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = RUNTIME) -> dict[str, Path]:
    return {_module(p, package): p for p in sorted(package.rglob("*.py"))}


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Product module -> the product modules it imports, function-local imports included."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = edges.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # "from pkg import mod" names the module itself when there is one
                targets = [
                    f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules
                ]
                targets = targets or [node.module]
            found.update(t for t in targets if t in modules and t != name)
    return edges


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else parts[0]
    for index, layer in enumerate(LAYERS):
        if package in layer:
            return index, package
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def layering_offences(edges: dict[str, set[str]]) -> list[str]:
    offences = []
    for source, targets in sorted(edges.items()):
        (here, mine) = _layer(source)
        for target in sorted(targets):
            (there, theirs) = _layer(target)
            if there > here or (there == here and mine != theirs and mine not in FOUNDATION):
                offences.append(f"{source} -> {target}")
    return offences


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_imports_point_down_the_layers() -> None:
    edges = _edges(_modules())
    assert sum(len(t) for t in edges.values()) > 200  # the walk really resolved the imports
    assert layering_offences(edges) == []


def test_no_two_product_modules_import_each_other() -> None:
    assert cycles(_edges(_modules())) == []


def test_no_circle_among_the_harness_modules() -> None:
    """The harness too: its stack, bench and chaos modules each build on the ones below."""
    assert cycles(_edges(_modules(HARNESS))) == []


def test_the_layering_checks_catch_a_climb_a_sideways_import_and_a_circle() -> None:
    edges = {
        "barcode_pipeline.domain.scan": {"barcode_pipeline.config"},  # climbs
        "barcode_pipeline.ingest.app": {"barcode_pipeline.worker.storage"},  # sideways
        "barcode_pipeline.run.supervisor": {"barcode_pipeline.run.watchdog"},
        "barcode_pipeline.run.watchdog": {"barcode_pipeline.run.supervisor"},  # a circle
        "barcode_pipeline.retry": {"barcode_pipeline.errors"},  # the foundation's modules: fine
    }
    assert layering_offences(edges) == [
        "barcode_pipeline.domain.scan -> barcode_pipeline.config",
        "barcode_pipeline.ingest.app -> barcode_pipeline.worker.storage",
    ]
    assert cycles(edges) == [["barcode_pipeline.run.supervisor", "barcode_pipeline.run.watchdog"]]
