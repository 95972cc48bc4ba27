"""Per-role credentials: each service connects with its own user where one is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from barcode_pipeline.config import ROLE_SETTINGS, Settings, flat_names, for_role, load_settings


def test_a_role_uses_its_own_credentials_and_the_shared_ones_otherwise() -> None:
    shared = Settings(db_url="mysql://admin:a@db/app", redis_url="redis://admin:a@r/0",
                      kafka_sasl_username="admin", kafka_sasl_password="admin-pw")  # fmt: skip
    assert for_role(shared, "worker") == shared  # nothing of its own: the shared settings
    own = shared.updated({
        "worker_db_url": "mysql://w:w@db/app", "worker_redis_url": "redis://w:w@r/0",
        "processor_kafka_sasl_username": "processor", "processor_kafka_sasl_password": "p-pw",
    })  # fmt: skip
    worker = for_role(own, "worker")
    assert (worker.db.url, worker.redis.url) == ("mysql://w:w@db/app", "redis://w:w@r/0")
    processor = for_role(own, "processor")
    assert (processor.kafka.sasl_username, processor.kafka.sasl_password) == ("processor", "p-pw")
    assert processor.db.url == shared.db.url and processor.redis.url == shared.redis.url
    assert for_role(own, "ingest").kafka.sasl_password == "admin-pw"


def test_every_role_setting_exists_and_its_secrets_can_come_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = flat_names(Settings)
    for mapping in ROLE_SETTINGS.values():
        assert all(shared in fields and own in fields for shared, own in mapping.items())
    secret = tmp_path / "worker-db-url"
    secret.write_text("mysql://bp_worker:from-file@db/app\n")
    monkeypatch.delenv("BP_WORKER_DB_URL", raising=False)
    monkeypatch.setenv("BP_WORKER_DB_URL_FILE", str(secret))
    assert for_role(load_settings(), "worker").db.url == "mysql://bp_worker:from-file@db/app"
