"""Settings: environment parsing and one-line errors."""

from __future__ import annotations

import pytest

from barcode_pipeline.config import load_settings, settings_env
from barcode_pipeline.errors import ConfigError


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_INGEST_PORT", "abc")
    with pytest.raises(ConfigError, match="BP_INGEST_PORT"):
        load_settings()


def test_bad_override_names_the_option() -> None:
    with pytest.raises(ConfigError, match="--workers"):
        load_settings(workers=0)


def test_settings_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings(workers=3, dedup_policy="barcode")
    for key, value in settings_env(original).items():
        monkeypatch.setenv(key, value)
    assert load_settings() == original


def test_a_retired_setting_is_refused_naming_what_replaces_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_INGEST_KEY_BURST", "20")  # it meant requests per process: silently ignored, no
    with pytest.raises(ConfigError, match=r"BP_INGEST_KEY_BURST is no longer read.*BP_INGEST_KEY_WINDOW_S"):
        load_settings()
