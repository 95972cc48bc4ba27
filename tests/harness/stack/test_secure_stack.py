"""``stack up --secure`` against the real servers: TLS only, per-role users, least privilege, no leak.

One secured stack serves the module (``secure_stack`` in conftest.py), on the plaintext stack's
ports plus an offset.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from barcode_harness.demo import DemoSpec, run_demo
from barcode_harness.settings import HarnessSettings
from barcode_harness.stack import profile
from barcode_harness.stack import secure as transport
from barcode_harness.stack.manager import StackManager
from barcode_pipeline import names
from barcode_pipeline.adapters import db
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.config import SECRET_FILE_SETTINGS, settings_env
from barcode_pipeline.errors import StackError
from barcode_pipeline.monitoring.exporter import live_workers
from barcode_pipeline.probes.backlog import Backlog, redis_backlog

pytestmark = pytest.mark.integration


def _secrets(settings: HarnessSettings, *, clients_only: bool = False) -> list[str]:
    """Every generated password; ``clients_only`` leaves out MariaDB's root one, which no client holds
    (only the harness, over the server's socket)."""
    files = transport.SecureFiles.of(settings)
    paths = sorted((files.root / "secrets").glob("*.password"))
    return [p.read_text().strip() for p in paths if not (clients_only and p.name == "db-root.password")]


def _hostport(url: str) -> tuple[str, int]:
    t = db.parse_db_url(url) if url.startswith("mysql") else None
    if t is not None:
        return t.host, t.port
    host, _, port = url.split("@")[-1].split("/")[0].rpartition(":")
    return host, int(port)


# --- plaintext, untrusted certificates --------------------------------------------------------


def test_plaintext_is_refused_by_every_server(secure_stack: HarnessSettings) -> None:
    """Each refusal is shown against a TLS client that succeeds on the same address, so a stopped
    server or a wrong port could not pass it."""
    kafka_adapter.admin(secure_stack).list_topics(timeout=10)  # TLS + SASL on this address: answers
    plain_kafka = AdminClient({"bootstrap.servers": secure_stack.kafka.bootstrap, "log_level": 0})
    with pytest.raises(KafkaException):
        plain_kafka.list_topics(timeout=3)
    host, port = _hostport(secure_stack.redis.url)
    assert redis_adapter.client(secure_stack).ping()  # the same host and port, over TLS
    with pytest.raises(redis.ConnectionError, match=r"Connection closed by server|reset by peer"):
        redis.Redis(host=host, port=port, socket_timeout=3).ping()
    target = db.parse_db_url(secure_stack.db.url)
    with pytest.raises(pymysql.err.OperationalError):  # even with the right password
        pymysql.connect(host=target.host, port=target.port, user=target.user, password=target.password,
                        database=target.database, ssl_disabled=True, connect_timeout=3)  # fmt: skip
    # ... and the same credentials over verified TLS are let in.
    db.connect(secure_stack.db.url).close()


def test_kafka_controller_listener_wants_a_client_certificate(secure_stack: HarnessSettings) -> None:
    """Refused without a client certificate; with one the CA signed for a TLS client (the broker's
    own, which the controllers also present to each other) the same handshake completes."""
    files = transport.SecureFiles.of(secure_stack)
    host = secure_stack.kafka.bootstrap.rpartition(":")[0]

    def handshake(client_cert: bool) -> None:
        context = ssl.create_default_context(cafile=str(secure_stack.kafka.ssl_ca_file))
        if client_cert:
            context.load_cert_chain(files.cert("kafka"), files.key("kafka"))
        raw = socket.create_connection((host, secure_stack.kafka_controller_port), timeout=5)
        with context.wrap_socket(raw, server_hostname=host) as tls:  # the server's certificate: trusted
            tls.settimeout(1)
            with contextlib.suppress(TimeoutError):  # still open: the listener waits for a request
                assert tls.recv(1) != b"", "closed"  # TLS 1.3 reports a refusal on the first read

    handshake(client_cert=True)
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)) as refused:
        handshake(client_cert=False)
    if isinstance(refused.value, ssl.SSLError):  # the server's alert about our missing certificate (the
        # JVM sends bad_certificate; TLS 1.3 has certificate_required), not our distrust of its own
        assert "ALERT_BAD_CERTIFICATE" in str(refused.value) or "CERTIFICATE_REQUIRED" in str(refused.value)


def test_a_client_that_does_not_trust_the_ca_is_refused(secure_stack: HarnessSettings) -> None:
    host, port = _hostport(secure_stack.redis.url)
    password = transport.SecureFiles.of(secure_stack).password("redis", "admin")
    untrusting = redis.Redis(
        host=host, port=port, ssl=True, username="admin", password=password, socket_timeout=3
    )  # fmt: skip  (the system CAs only)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        untrusting.ping()


# --- least privilege ------------------------------------------------------------------------------


def test_the_workers_database_user_cannot_drop_or_delete(secure_stack: HarnessSettings) -> None:
    conn = db.connect(secure_stack.accounts.worker_db_url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM barcodes")  # what it needs works
            for statement in ("DELETE FROM barcodes", "DROP TABLE barcodes", "TRUNCATE TABLE barcodes",
                              "SELECT COUNT(*) FROM scanner_keys", "CREATE TABLE evil (x INT)"):  # fmt: skip
                with pytest.raises(pymysql.err.OperationalError) as denied:
                    cur.execute(statement)
                assert denied.value.args[0] in (1142, 1044), statement  # command denied
    finally:
        conn.close()
    ingest = db.connect(secure_stack.accounts.ingest_db_url, autocommit=True)
    try:
        with ingest.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM scanner_keys")
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("DELETE FROM scanner_keys")
    finally:
        ingest.close()


def test_root_cannot_log_in_over_tcp_without_a_password(secure_stack: HarnessSettings) -> None:
    """mariadb-install-db made root@127.0.0.1, root@::1 and root@<host> without a password; TLS alone
    let any local process in with every privilege. Only root@localhost (the socket) stays, locked."""
    target = db.parse_db_url(secure_stack.db.url)
    ca = transport.SecureFiles.of(secure_stack).ca_cert
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(pymysql.err.OperationalError) as denied:
            pymysql.connect(host=host, port=target.port, user="root", password="", connect_timeout=3,
                            ssl={"ca": str(ca)})  # fmt: skip
        assert denied.value.args[0] == 1045, (host, denied.value.args)  # access denied, not a TLS error
    admin = db.connect(secure_stack.db.url, autocommit=True)  # the same TLS, the admin's password: in
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT Host, plugin, authentication_string = '' FROM mysql.user WHERE User = 'root'")
            assert [(h, empty) for h, _plugin, empty in cur.fetchall()] == [("localhost", 0)]
    finally:
        admin.close()


def test_redis_users_have_only_their_commands_and_keys(secure_stack: HarnessSettings) -> None:
    processor = redis.Redis.from_url(secure_stack.accounts.processor_redis_url, socket_timeout=3)
    worker = redis.Redis.from_url(secure_stack.accounts.worker_redis_url, socket_timeout=3)
    ingest = redis.Redis.from_url(secure_stack.accounts.ingest_redis_url, socket_timeout=3)
    exporter = redis.Redis.from_url(secure_stack.accounts.exporter_redis_url, socket_timeout=3)
    redis_backlog(secure_stack, Backlog(), exporter)  # what the exporter reads, it may read (or raises)
    live_workers(exporter)
    processor.ping()
    worker.ping()
    counter = names.rate_limit_key("acl-test", 1)
    ingest.hset(counter, "acl-test", 2)
    assert ingest.pexpire(counter, 1000) and ingest.hvals(counter)
    denied = [
        (ingest, ("GET", names.dedup_bucket_key("event", 1, 0))),  # only its counters
        (ingest, ("XRANGE", names.STREAM_PREFIX + "0", "-", "+")),
        (ingest, ("DEL", counter)),
        (exporter, ("XADD", names.STREAM_PREFIX + "0", "*", "f", "v")),  # it reads, never writes
        (exporter, ("GET", names.dedup_bucket_key("event", 1, 0))),
        (exporter, ("DEL", names.HEARTBEAT_PREFIX + "acl-test")),
        (processor, ("FLUSHALL",)),
        (processor, ("GET", "unrelated-key")),  # a key outside its patterns
        (worker, ("FLUSHDB",)),
        (worker, ("CONFIG", "GET", "*")),
        (worker, ("KEYS", "*")),
        (worker, ("DEL", names.STREAM_PREFIX + "0")),  # its streams and the DLQ: read, never deleted
        (worker, ("UNLINK", names.DLQ_STREAM)),
    ]
    for client, command in denied:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)  # type: ignore[no-untyped-call]
    assert worker.delete(names.HEARTBEAT_PREFIX + "acl-test") == 0  # its heartbeat it may delete
    default = redis.Redis.from_url(re.sub(r"//[^@]*@", "//", secure_stack.redis.url), socket_timeout=3)
    with pytest.raises(redis.exceptions.AuthenticationError):  # the default user is off
        default.ping()


def test_kafka_users_have_only_their_topics(secure_stack: HarnessSettings) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.cimpl import NewTopic

    from barcode_pipeline import names
    from barcode_pipeline.adapters.kafka import connection_config, ensure_topics
    from barcode_pipeline.config import for_role

    ensure_topics(secure_stack)  # as the admin: the topic exists, so only the ACL can refuse the write
    ingest = for_role(secure_stack, "ingest")
    admin = AdminClient({**connection_config(ingest), "log_level": 0})
    with pytest.raises(KafkaException, match="AUTHORIZATION"):
        admin.create_topics([NewTopic("not-for-ingest", 1, 1)])["not-for-ingest"].result(20)
    processor = for_role(secure_stack, "processor")
    errors: list[str] = []
    producer = Producer({**connection_config(processor), "log_level": 0, "message.timeout.ms": 10_000})
    producer.produce(names.TOPIC, b"x", on_delivery=lambda err, _msg: errors.append(str(err)))
    producer.flush(20)
    assert errors and "AUTHORIZATION" in errors[0].upper(), errors  # it reads the topic, never writes it


# --- wrong credentials: one clear line, retried -----------------------------------------------


def _service_output(
    args: list[str], settings: HarnessSettings, env: dict[str, str], wanted: Callable[[list[str]], bool]
) -> list[str]:
    """Start ``barcode-pipeline ARGS``; return its lines once ``wanted`` holds (still running then)."""
    full = {**os.environ, **settings_env(settings), **env, "PYTHONUNBUFFERED": "1"}
    for name in SECRET_FILE_SETTINGS:  # the values above win; no file of the caller's may stand in
        full.pop(f"BP_{name.upper()}_FILE", None)
    proc = subprocess.Popen([sys.executable, "-m", "barcode_pipeline", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not wanted(lines) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, f"exited with {proc.returncode} instead of retrying: {lines[-5:]}"
        assert wanted(lines), lines[-10:]
        return list(lines)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    ("case", "marker", "reason"),
    [
        ("password", "Authentication failed", "invalid credentials"),
        ("certificate", "SSL handshake failed", "certificate verify failed"),
    ],
)
def test_a_wrong_kafka_password_or_ca_is_a_clear_line_and_the_processor_keeps_retrying(
    secure_stack: HarnessSettings, tmp_path: Path, case: str, marker: str, reason: str
) -> None:
    from tests.tls_helpers import make_pki

    env = (
        {"BP_PROCESSOR_KAFKA_SASL_PASSWORD": "wrong-pw-1"}
        if case == "password"
        else {"BP_KAFKA_SSL_CA_FILE": str(make_pki(tmp_path).ca_cert)}  # a CA that signed nothing of its
    )

    def failed(lines: list[str]) -> bool:
        startup_retried = any("start-up (kafka" in line and "retrying in" in line for line in lines)
        return startup_retried and sum(marker in line for line in lines) >= 3

    lines = _service_output(["processor"], secure_stack, env, failed)
    clear = [line for line in lines if marker in line]
    assert secure_stack.kafka.bootstrap in clear[0] and reason in clear[0], clear[0]
    assert not any("Traceback" in line for line in lines)


def test_a_wrong_redis_password_is_a_clear_line_and_the_worker_backs_off(
    secure_stack: HarnessSettings,
) -> None:
    host, port = _hostport(secure_stack.redis.url)
    bad = secure_stack.accounts.worker_redis_url.replace("@", "x@", 1)  # the password with one character more

    def failed(lines: list[str]) -> bool:
        return any("(attempt 3)" in line for line in lines)

    lines = _service_output(
        ["worker", "--name", "wrong-pw"], secure_stack, {"BP_WORKER_REDIS_URL": bad}, failed
    )
    auth = [line for line in lines if "failed (attempt" in line]
    assert f"redis {host}:{port}" in auth[0] and "invalid username-password" in auth[0], auth[0]
    delays = [float(m.group(1)) for line in auth if (m := re.search(r"retrying in ([0-9.]+)s", line))]
    assert len(delays) >= 3 and max(delays) > min(delays), delays  # backing off, not a tight loop
    assert not any("Traceback" in line for line in lines)


def test_a_wrong_database_password_is_one_line_naming_the_server(secure_stack: HarnessSettings) -> None:
    target = db.parse_db_url(secure_stack.db.url)
    bad = secure_stack.db.url.replace(target.password, "not-the-password")
    env = {**os.environ, **settings_env(secure_stack), "BP_DB_URL": bad}
    result = subprocess.run([sys.executable, "-m", "barcode_pipeline", "db", "status"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert len(out.strip().splitlines()) == 1, out
    assert f"{target.host}:{target.port}" in out and "Access denied" in out, out
    assert "not-the-password" not in out


# --- the whole pipeline, and no secret in any log ------------------------------------------------


def test_the_pipeline_runs_end_to_end_on_it_and_no_log_line_holds_a_secret(
    secure_stack: HarnessSettings,
) -> None:
    log = secure_stack.state_dir / "logs" / "demo-pipeline.log"
    log.unlink(missing_ok=True)
    admin_redis = redis.Redis.from_url(secure_stack.redis.url, socket_timeout=5)
    admin_redis.acl_log_reset()
    spec = DemoSpec(
        rate=50, duration_s=2, duplicate_ratio=0.1, warmup_rate=50, warmup_round_s=0.5, warmup_max_rounds=3
    )
    summary = run_demo(secure_stack, spec)
    assert summary["lost"] == 0 and summary["duplicate_rows"] == 0, summary
    assert summary["stored"] > 0, summary
    assert admin_redis.acl_log() == []  # no command or key was refused
    logs = [log, *sorted(secure_stack.state_dir.glob("*/logs/*.log"))]
    secrets = _secrets(secure_stack)
    assert len(secrets) == 13  # twelve clients' and MariaDB's root
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a password is in {path}"
        assert not re.search(r"bpk_[A-Za-z0-9_-]{16,}", text), f"a scanner key is in {path}"
    assert "[processor]" in log.read_text()  # the log really is the pipeline's


# --- settings and state ---------------------------------------------------------------------------


def test_stack_env_names_secret_files_readable_by_the_owner_only(secure_stack: HarnessSettings) -> None:
    text = transport.env_lines(secure_stack)
    for secret in _secrets(secure_stack):
        assert secret not in text
    files = [Path(m) for m in re.findall(r"_FILE=(\S+/secrets/\S+)", text)]
    assert len(files) == 12  # every client secret of client_values()
    for path in [*files, *(transport.SecureFiles.of(secure_stack).root / "secrets").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0, path
    shown = transport.env_lines(secure_stack, show_secrets=True)
    assert all(secret in shown for secret in _secrets(secure_stack, clients_only=True))


def test_a_secured_state_dir_is_not_started_plaintext(secure_stack: HarnessSettings) -> None:
    plain = secure_stack.updated({"stack_secure": False})
    with pytest.raises(StackError, match="secured stack"):
        StackManager(plain).up(quiet=True)


def test_a_plaintext_state_dir_is_not_secured_under_its_clients(tmp_path: Path) -> None:
    transport.claim(tmp_path, secure=False)
    with pytest.raises(StackError, match="plaintext stack"):
        transport.claim(tmp_path, secure=True)
    transport.claim(tmp_path / "fresh", secure=True)
    assert profile.recorded(tmp_path / "fresh", transport.MARKER) == "tls"
