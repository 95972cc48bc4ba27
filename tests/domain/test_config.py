"""Settings: environment parsing into sections, one-line errors, copies with changes."""

from __future__ import annotations

import pytest

from barcode_pipeline.config import Settings, flat_names, load_settings, settings_env
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


def test_flat_names_fill_their_sections_from_the_environment_and_from_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BP_LINGER_MS", "2.5")
    monkeypatch.setenv("bp_workers", "4")  # case-insensitive, as pydantic's own source
    settings = load_settings(redis_url="redis://r:1/0", ingest_auth="off")
    assert (settings.kafka.linger_ms, settings.worker.count) == (2.5, 4)
    assert (settings.redis.url, settings.auth.mode) == ("redis://r:1/0", "off")
    assert settings.kafka.bootstrap == Settings().kafka.bootstrap  # the rest of the section: defaults
    assert len(flat_names(Settings)) == len(set(flat_names(Settings))) == 108  # one name per setting


def test_a_copy_with_changes_is_validated_and_refuses_unknown_names() -> None:
    settings = Settings(workers=2)
    changed = settings.updated({"workers": 3, "db_url": "mysql://u:p@db/x"})
    assert (changed.worker.count, changed.db.url, settings.worker.count) == (3, "mysql://u:p@db/x", 2)
    with pytest.raises(KeyError, match="worker_count"):
        settings.updated({"worker_count": 3})  # a typo would otherwise change nothing, silently
    with pytest.raises(ValueError, match="workers"):
        settings.updated({"workers": 0})
