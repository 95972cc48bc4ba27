"""Connection settings for secured servers: Kafka SASL/TLS, database TLS, secrets from files, masking."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from barcode_pipeline.adapters.db import parse_db_url
from barcode_pipeline.adapters.kafka import connection_config, consumer_config, producer_config
from barcode_pipeline.config import Settings, load_settings, secrets_from_files, settings_env
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.logs import JsonFormatter, MaskingFormatter, add_secret, mask

CLI = Path(sys.executable).with_name("barcode-pipeline")


def test_plaintext_kafka_needs_nothing_but_the_bootstrap() -> None:
    assert connection_config(Settings(kafka_bootstrap="b:1")) == {"bootstrap.servers": "b:1"}


def test_sasl_ssl_reaches_every_kafka_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    settings = Settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="ingest", kafka_sasl_password="s3cret-pw",
        kafka_ssl_ca_file=ca,
    )  # fmt: skip
    want = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "ingest",
        "sasl.password": "s3cret-pw",
        "ssl.ca.location": str(ca),
        "enable.ssl.certificate.verification": True,
    }
    for conf in (connection_config(settings), producer_config(settings), consumer_config(settings, "g")):
        assert want.items() <= conf.items()
    with pytest.raises(ConfigError, match="BP_KAFKA_SASL_USERNAME"):
        connection_config(Settings(kafka_security_protocol="SASL_SSL"))
    mtls = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cert_file=tmp_path / "c", kafka_ssl_key_file=tmp_path / "k"
    )
    assert "sasl.password" not in connection_config(mtls)
    assert connection_config(mtls)["ssl.certificate.location"] == str(tmp_path / "c")


def test_database_tls_comes_from_the_url() -> None:
    plain = parse_db_url("mysql://u:p@db:3306/app")
    assert plain.ssl_args() == {"ssl_disabled": True}  # no opportunistic, unverified TLS
    secured = parse_db_url(
        "mysql://u:p@db:3306/app?ssl_ca=/etc/ca%20dir/ca.pem&ssl_cert=/c.pem&ssl_key=/k.pem"
    )
    assert secured.ssl_args() == {
        "ssl_ca": "/etc/ca dir/ca.pem",
        "ssl_cert": "/c.pem",
        "ssl_key": "/k.pem",
        "ssl_verify_cert": True,
        "ssl_verify_identity": True,
    }
    assert (
        parse_db_url("mysql://u:p@db/app?ssl_ca=/ca&ssl_verify_identity=false").ssl_args()[
            "ssl_verify_identity"
        ]
        is False
    )


def test_secrets_can_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    url = tmp_path / "url"
    url.write_text("mysql://u:filepw@db:3306/app")
    assert secrets_from_files({"BP_KAFKA_SASL_PASSWORD_FILE": str(secret)}) == {
        "kafka_sasl_password": "from-a-file"
    }
    # the variable itself wins over its file
    assert secrets_from_files({"BP_DB_URL_FILE": str(url), "BP_DB_URL": "mysql://x@y/z"}) == {}
    monkeypatch.delenv("BP_DB_URL", raising=False)
    monkeypatch.setenv("BP_DB_URL_FILE", str(url))
    assert load_settings().db.url == "mysql://u:filepw@db:3306/app"
    monkeypatch.setenv("BP_DB_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="BP_DB_URL_FILE: cannot read"):
        load_settings()


def test_children_get_the_secret_itself_not_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("child-pw")
    monkeypatch.setenv("BP_KAFKA_SASL_PASSWORD_FILE", str(secret))
    assert settings_env(load_settings())["BP_KAFKA_SASL_PASSWORD"] == "child-pw"


def test_logs_and_errors_mask_passwords_and_keys() -> None:
    add_secret("sasl-secret-value")
    text = (
        "db mysql://barcode:hunter22@127.0.0.1:3307/x redis rediss://app:pw0rd@r:6379/0 key bpk_" + "A" * 43
    )
    masked = mask(text + " sasl-secret-value")
    for secret in ("hunter22", "pw0rd", "A" * 43, "sasl-secret-value"):
        assert secret not in masked
    assert "mysql://barcode:***@127.0.0.1:3307/x" in masked and "bpk_***" in masked
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(MaskingFormatter("%(message)s"))
    logger = logging.getLogger("test-masking")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("connect failed for mysql://u:topsecret1@h/db")
        except RuntimeError:
            logger.exception("url %s", "redis://:topsecret2@h:1/0")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "topsecret1" not in out and "topsecret2" not in out and "Traceback" in out


def test_sasl_without_tls_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match=r"^BP_KAFKA_SECURITY_PROTOCOL: .*SASL_SSL"):
        load_settings()


@pytest.mark.parametrize("password", ["p@ss", "pa/ss", "p:a@s/s", "a@b@c"])
def test_an_unencoded_password_is_masked_whole(password: str) -> None:
    masked = mask(f"failed: mysql://barcode:{password}@127.0.0.1:3307/x (retrying)")
    assert masked == "failed: mysql://barcode:***@127.0.0.1:3307/x (retrying)", masked
    # a user name holding "@" (user@server, as some hosted databases want it)
    masked = mask(f"mysql://bp@db-host:{password}@127.0.0.1:3307/x")
    assert masked == "mysql://bp@db-host:***@127.0.0.1:3307/x", masked


def test_json_lines_are_masked_field_by_field_and_stay_json() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "down: redis://w:s3cr3t@h:6379/0", None, None)
    line = JsonFormatter("worker[w@1]").format(record)
    data = orjson.loads(line)  # a greedy mask across fields would have broken it
    assert data["event"] == "down: redis://w:***@h:6379/0" and data["instance"] == "w@1"


@pytest.mark.parametrize("password", ["Xq/Zk9", "2024/Zk9", "Xq?Zk9", "Xq#Zk9"])
def test_a_db_url_the_password_breaks_is_refused_without_quoting_it(password: str) -> None:
    with pytest.raises(ConfigError) as caught:  # the port or the database name would hold part of it
        parse_db_url(f"mysql://barcode:{password}@127.0.0.1:3307/barcode")
    assert "Xq" not in str(caught.value) and "Zk9" not in str(caught.value)
    assert "percent-encode" in str(caught.value)


@pytest.mark.integration
def test_a_wrong_database_password_is_one_line_naming_the_server(
    stack_settings: Settings, tmp_path: Path
) -> None:
    target = parse_db_url(stack_settings.db.url)
    url_file = tmp_path / "db-url"
    url_file.write_text(
        f"mysql://{target.user}:WrongPassw0rd@{target.host}:{target.port}/{target.database}\n"
    )
    env = {"BP_DB_URL_FILE": str(url_file), "PATH": "/usr/bin:/bin"}
    for command in (["db", "status"], ["keys", "list"]):
        done = subprocess.run(
            [str(CLI), *command], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert f"{target.host}:{target.port}" in lines[0] and "Access denied" in lines[0]
        assert "WrongPassw0rd" not in done.stderr + done.stdout
