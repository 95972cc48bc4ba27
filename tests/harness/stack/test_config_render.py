"""Unit tests of the stack's rendered configuration (pure, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.kafka import render_pom, render_server_properties, split_hostport
from barcode_harness.stack.mariadb import render_my_cnf
from barcode_harness.stack.redis import render_redis_conf
from barcode_harness.stack.secure import CERT_PRINCIPAL, SERVERS, SecureFiles, java_argfile


def test_kafka_properties_follow_settings(tmp_path: Path) -> None:
    s = HarnessSettings(kafka_bootstrap="127.0.0.1:19092", kafka_controller_port=19093)
    text = render_server_properties(s, tmp_path / "data")
    assert "process.roles=broker,controller" in text
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in text
    assert "auto.create.topics.enable=false" in text
    assert f"log.dirs={tmp_path / 'data'}" in text


def test_pom_pins_kafka_and_a_log4j2_binding() -> None:
    pom = render_pom("4.1.1")
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom
    assert "log4j-slf4j2-impl" in pom and "slf4j-api" in pom


def test_redis_conf_has_aof_and_fsync_policy(tmp_path: Path) -> None:
    s = HarnessSettings(redis_url="redis://127.0.0.1:6390/0", redis_appendfsync="always")
    text = render_redis_conf(s, tmp_path)
    assert "port 6390" in text and "bind 127.0.0.1" in text
    assert "appendonly yes" in text and "appendfsync always" in text
    assert f"dir {tmp_path / 'data'}" in text


def test_mariadb_cnf_uses_url_port_and_own_socket(tmp_path: Path) -> None:
    s = HarnessSettings(db_url="mysql://u:p@127.0.0.1:3399/app")
    text = render_my_cnf(s, tmp_path, run_as_root=True)
    assert "port = 3399" in text and f"socket = {tmp_path / 'mysqld.sock'}" in text
    assert "user = root" in text
    assert "user = root" not in render_my_cnf(s, tmp_path, run_as_root=False)


def test_split_hostport() -> None:
    assert split_hostport("127.0.0.1:9092,127.0.0.1:9094", 1) == ("127.0.0.1", 9092)
    assert split_hostport("localhost", 9092) == ("localhost", 9092)


def test_a_java_argument_file_is_private_and_quotes_every_value(tmp_path: Path) -> None:
    """The SCRAM passwords reach `kafka-storage format` through this file, not through argv."""
    path = tmp_path / "format.args"
    assert java_argfile(path, ["Main", 'pw"with\\odd chars', "x y"]) == f"@{path}"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == '"Main"\n"pw\\"with\\\\odd chars"\n"x y"\n'
    with pytest.raises(ValueError, match="line break"):
        java_argfile(path, ["Main", "two\nlines"])


def test_each_server_has_its_own_certificate_and_only_kafkas_is_a_client(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    files = SecureFiles(tmp_path / "secure")
    files.ensure()
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    certs = {s: x509.load_pem_x509_certificate(files.cert(s).read_bytes()) for s in SERVERS}
    assert len({c.public_key().public_numbers().n for c in certs.values()}) == 3
    for server, cert in certs.items():
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert (ExtendedKeyUsageOID.CLIENT_AUTH in usage) == (server == "kafka"), server
    assert f"CN={certs['kafka'].subject.rfc4514_string().removeprefix('CN=')}" == CERT_PRINCIPAL
    assert files.kafka_keystore.read_bytes().endswith(files.cert("kafka").read_bytes())
    # a state dir from before: a missing server certificate is made from the kept CA, nothing else
    kept = {s: files.cert(s).read_bytes() for s in SERVERS}
    files.cert("redis").unlink()
    files.ensure()
    x509.load_pem_x509_certificate(files.cert("redis").read_bytes()).verify_directly_issued_by(ca)
    assert files.cert("redis").read_bytes() != kept["redis"]
    assert all(files.cert(s).read_bytes() == kept[s] for s in ("kafka", "mariadb"))
