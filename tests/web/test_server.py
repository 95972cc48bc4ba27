"""Both HTTP services are served the same way: one ``ServerSpec`` each, one set of process settings."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from barcode_pipeline.config import Settings, load_settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.ingest import server as ingest_server
from barcode_pipeline.legacy import server as legacy_server
from barcode_pipeline.web.headguard import GuardedHttpToolsProtocol
from barcode_pipeline.web.server import uvicorn_config


def test_ingest_and_legacy_share_the_process_settings() -> None:
    settings = Settings(ingest_processes=3, ingest_port=18001, legacy_port=18002)
    ingest = uvicorn_config(ingest_server.server_spec(settings))
    legacy = uvicorn_config(legacy_server.server_spec(settings))
    shared = ("loop", "http", "lifespan", "access_log", "backlog", "timeout_keep_alive", "workers", "factory")
    assert {k: getattr(ingest, k) for k in shared} == {k: getattr(legacy, k) for k in shared}
    assert (ingest.port, legacy.port, ingest.workers) == (18001, 18002, 3)
    assert ingest.loop == "uvloop" and ingest.http is GuardedHttpToolsProtocol and not ingest.server_header


def test_each_server_process_can_rebuild_its_app_from_the_spec() -> None:
    """uvicorn's multiprocess mode pickles the factory into every process."""
    settings = Settings()
    for spec in (ingest_server.server_spec(settings), legacy_server.server_spec(settings)):
        again = pickle.loads(pickle.dumps(spec))
        assert dataclasses.replace(again, app_factory=spec.app_factory) == spec
        assert again.app_factory.func is spec.app_factory.func  # type: ignore[attr-defined]
        assert again.app_factory.args == spec.app_factory.args  # type: ignore[attr-defined]


def test_x_forwarded_for_is_believed_from_the_configured_proxies_only() -> None:
    """uvicorn's own default believes it from 127.0.0.1: any local client could pick its address."""
    plain = uvicorn_config(ingest_server.server_spec(Settings()))
    assert plain.proxy_headers is False
    behind = uvicorn_config(ingest_server.server_spec(Settings(ingest_proxies="10.77.0.50")))
    assert behind.proxy_headers is True and behind.forwarded_allow_ips == "10.77.0.50"
    assert (
        uvicorn_config(legacy_server.server_spec(Settings(ingest_proxies="10.77.0.50"))).proxy_headers
        is False
    )


def test_a_trusted_network_holding_a_proxy_is_refused_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_INGEST_PROXIES", "10.77.0.50")
    monkeypatch.setenv("BP_INGEST_TRUSTED_NETWORKS", "10.77.0.0/24=*")
    with pytest.raises(ConfigError, match=r"10\.77\.0\.0/24 holds the proxy 10\.77\.0\.50"):
        load_settings()
    monkeypatch.setenv("BP_INGEST_TRUSTED_NETWORKS", "10.20.0.0/16=SEOUL-*")
    assert load_settings().ingest.proxies == "10.77.0.50"
    monkeypatch.setenv("BP_INGEST_PROXIES", "10.77.0.500")
    with pytest.raises(ConfigError, match="BP_INGEST_PROXIES"):
        load_settings()
