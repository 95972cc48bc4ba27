"""``/docs`` in a real browser (headless Chromium from Debian) with every other host unreachable.

Chromium resolves no name but 127.0.0.1 here (``--host-resolver-rules``), so the page works only if
Swagger UI's files come from the service itself. The net log shows what the page asked for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app as create_ingest
from barcode_pipeline.legacy.app import create_app as create_legacy
from tests.legacy.conftest import Db, ThreadServer

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no other host exists
    "--virtual-time-budget=20000",  # run the page's scripts until idle, up to 20 s of virtual time
]
SCAN_OPERATIONS = ("Ingest one scan", "Ingest a batch of scans")


@pytest.fixture(scope="module")
def ingest_docs(stack_settings: Settings) -> Iterator[str]:
    server = ThreadServer(create_ingest(stack_settings))
    server.start()
    yield server.base_url
    server.stop()


def render(url: str, tmp_path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The DOM after the page's scripts ran, and (initiator, url) of every request Chromium made."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed (scripts/setup.sh installs the Debian package)"
    net_log = tmp_path / "net-log.json"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--log-net-log={net_log}",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        (str(e["params"].get("initiator", "")), str(e["params"]["url"]))
        for e in log["events"]
        if e["type"] == start_job and "url" in e.get("params", {})
    ]
    return done.stdout, requests


def test_docs_render_both_scan_operations_with_no_other_host(ingest_docs: str, tmp_path: Path) -> None:
    dom, requests = render(ingest_docs + names.ROUTE_DOCS, tmp_path)
    for summary in SCAN_OPERATIONS:
        assert summary in dom, dom[-3000:]  # Swagger UI ran (its script came from the service) and rendered
    by_page = [url for initiator, url in requests if initiator == ingest_docs]
    assert by_page, requests
    assert all(url.startswith(ingest_docs + "/") for url in by_page), by_page
    assert ingest_docs + names.ROUTE_DOCS_ASSETS + "/swagger-ui-bundle.js" in by_page
    assert ingest_docs + "/openapi.json" in by_page


@pytest.mark.parametrize("page", [names.ROUTE_DOCS, names.ROUTE_REDOC])
def test_docs_pages_reference_only_their_own_service(
    page: str, stack_settings: Settings, legacy_db: Db
) -> None:
    """Both services, both doc pages: every script, style and icon is a path on the service."""
    for app in (
        create_ingest(stack_settings),
        create_legacy(stack_settings.updated({"db_url": legacy_db.url})),
    ):
        server = ThreadServer(app)
        server.start()
        try:
            answer = httpx.get(server.base_url + page, timeout=30)
            html = answer.text
            assert "default-src 'self'" in answer.headers["content-security-policy"]
            assert "cdn" not in html.lower() and "https://" not in html and "http://" not in html, html
            assets = [
                a for a in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js") if a in html
            ]
            assert assets, html
            for asset in assets:
                got = httpx.get(f"{server.base_url}{names.ROUTE_DOCS_ASSETS}/{asset}", timeout=30)
                assert got.status_code == 200 and len(got.content) > 10_000
        finally:
            server.stop()
