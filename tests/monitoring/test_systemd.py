"""deploy/systemd verified by Debian's ``systemd-analyze verify`` (installed by scripts/setup.sh).

The units expect an install in /opt/barcode-pipeline; the test points them at this checkout's
entrypoint so the executable check is real. Any warning (an unknown key, a bad value) fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/barcode-pipeline/.venv/bin/barcode-pipeline"


def verify(directory: Path, *units: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("systemd-analyze")
    assert binary, "systemd-analyze not found: run scripts/setup.sh (apt-get install systemd)"
    return subprocess.run(
        [binary, "verify", "--man=no", *(f"./{u}" for u in units)],
        cwd=directory, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    entrypoint = Path(sys.executable).with_name("barcode-pipeline")
    assert entrypoint.exists(), entrypoint
    for unit in UNITS.iterdir():
        if unit.suffix in (".service", ".target"):
            (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, str(entrypoint)))
    return tmp_path


def test_units_verify_without_a_warning(unit_dir: Path) -> None:
    units = ["barcode-ingest.service", "barcode-processor.service", "barcode-exporter.service",
             "barcode-worker@1.service", "barcode-worker@2.service", "barcode-migrate.service",
             "barcode-pipeline.target"]  # fmt: skip
    result = verify(unit_dir, *units)
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


def test_verify_reports_a_broken_unit(unit_dir: Path) -> None:
    text = (unit_dir / "barcode-processor.service").read_text()
    broken = text.replace("Restart=always", "Restart=sometimes")
    (unit_dir / "broken.service").write_text(broken)
    result = verify(unit_dir, "broken.service")
    assert "restart specifier" in result.stderr


def test_every_service_restarts_and_reads_the_env_file_and_only_its_own_secrets() -> None:
    services = sorted(UNITS.glob("*.service"))
    roles = {"barcode-ingest.service": "ingest", "barcode-processor.service": "processor",
             "barcode-worker@.service": "worker", "barcode-exporter.service": "exporter",
             "barcode-migrate.service": "migrate"}  # fmt: skip
    assert {s.name for s in services} == set(roles)
    shared = (UNITS / "env.example").read_text()
    assert "BP_DB_URL" not in shared and "BP_REDIS_URL" not in shared  # no credential shared by all
    for service in services:
        text = service.read_text()
        role = roles[service.name]
        assert ("\nRestart=always\n" in text) == (role != "migrate"), service.name
        assert "\nEnvironmentFile=-/etc/barcode-pipeline/env\n" in text, service.name
        files = [line for line in text.splitlines() if line.startswith("EnvironmentFile=")]
        assert files == ["EnvironmentFile=-/etc/barcode-pipeline/env",
                         f"EnvironmentFile=-/etc/barcode-pipeline/{role}.env"], service.name  # fmt: skip
        assert (UNITS / f"{role}.env.example").exists(), role
        assert INSTALLED in text, service.name
        # DDL is the migration unit's alone; the services that need the schema wait for it
        assert ("db upgrade" in text) == (role == "migrate"), service.name
        if role in ("ingest", "worker"):
            assert "\nRequires=barcode-migrate.service\n" in text and "barcode-migrate.service" in text
