"""Both HTTP services are served the same way: one ``ServerSpec`` each, one set of process settings."""

from __future__ import annotations

import dataclasses
import pickle

from barcode_pipeline.config import Settings
from barcode_pipeline.ingest import server as ingest_server
from barcode_pipeline.legacy import server as legacy_server
from barcode_pipeline.web.onewrite import OneWriteHttpToolsProtocol
from barcode_pipeline.web.server import uvicorn_config


def test_ingest_and_legacy_share_the_process_settings() -> None:
    settings = Settings(ingest_processes=3, ingest_port=18001, legacy_port=18002)
    ingest = uvicorn_config(ingest_server.server_spec(settings))
    legacy = uvicorn_config(legacy_server.server_spec(settings))
    shared = ("loop", "http", "lifespan", "access_log", "backlog", "timeout_keep_alive", "workers", "factory")
    assert {k: getattr(ingest, k) for k in shared} == {k: getattr(legacy, k) for k in shared}
    assert (ingest.port, legacy.port, ingest.workers) == (18001, 18002, 3)
    assert ingest.loop == "uvloop" and ingest.http is OneWriteHttpToolsProtocol and not ingest.server_header


def test_each_server_process_can_rebuild_its_app_from_the_spec() -> None:
    """uvicorn's multiprocess mode pickles the factory into every process."""
    settings = Settings()
    for spec in (ingest_server.server_spec(settings), legacy_server.server_spec(settings)):
        again = pickle.loads(pickle.dumps(spec))
        assert dataclasses.replace(again, app_factory=spec.app_factory) == spec
        assert again.app_factory.func is spec.app_factory.func  # type: ignore[attr-defined]
        assert again.app_factory.args == spec.app_factory.args  # type: ignore[attr-defined]
