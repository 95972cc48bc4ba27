"""``bench footprint`` at tiny scale on the real stack: it runs end to end, writes its doc section,
and the markers it measures are in Redis's compact encoding. No figure is asserted as a speed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from barcode_pipeline.cli import app
from barcode_pipeline.config import Settings

pytestmark = pytest.mark.integration


def test_footprint_quick_writes_its_section(stack_settings: Settings, tmp_path: Path) -> None:
    doc = tmp_path / "capacity.md"
    doc.write_text("# Capacity\n\nkept text\n")
    result = CliRunner().invoke(
        app,
        ["bench", "footprint", "--quick", "--no-stack", "--scans", "5000", "--table-rows", "2000",
         "--doc", str(doc), "--out", str(tmp_path / "results"), "--log-level", "WARNING"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert text.startswith("# Capacity\n\nkept text\n")
    assert "<!-- footprint: begin" in text and "| 1,000 |" in text and ", listpack |" in text
    assert "hashtable" not in text and "per million rows" in text
    assert "| after migration 0005 (one secondary index) |" in text and "uk_barcodes_device_scan " in text
    assert "| after migration 0006 (the guard on the scan ID) |" in text
    assert "uk_barcodes_device_scan_id " in text
    assert len(list((tmp_path / "results").glob("*/footprint.json"))) == 1
