"""The scan endpoints are answered before the middleware stack (web/app.py, for speed), so a
middleware added later would silently not guard them: adding one that does not say it knows is
refused when the app is built."""

from __future__ import annotations

import pytest
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app


class DocsOnly:
    skips_hot_paths = True

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def test_a_middleware_that_would_miss_the_scan_endpoints_is_refused() -> None:
    app = create_app(Settings())
    refused = "CORSMiddleware would not see POST /ingest/barcode, /ingest/barcodes"
    with pytest.raises(TypeError, match=refused):
        app.add_middleware(CORSMiddleware, allow_origins=["*"])
    app.add_middleware(DocsOnly)  # one that says it only concerns the other paths is taken
    assert "DocsOnly" in [getattr(m.cls, "__name__", "") for m in app.user_middleware]
