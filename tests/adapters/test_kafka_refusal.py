"""``ensure_topics`` gives up at once when a broker refuses the client, and waits when none answers.

librdkafka's metadata request only times out on a wrong password or an untrusted certificate; the
reason comes through the error callback. The handshake case runs against a real TLS listener
whose certificate the client does not trust: the refusal happens before any Kafka byte is sent.
The wrong password needs a real SASL broker: tests/harness/stack/test_secure_stack.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from barcode_pipeline.adapters.kafka import ensure_topics, refusal
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import DeliveryError
from tests.tls_helpers import make_pki


@pytest.mark.parametrize(
    ("code", "text", "refused"),
    [
        (KafkaError._AUTHENTICATION, "b:1/bootstrap: SASL authentication error: Authentication failed", True),
        (KafkaError._SSL, "b:1/bootstrap: SSL handshake failed: certificate verify failed", True),
        (KafkaError._TRANSPORT, "b:1/bootstrap: SSL handshake failed: Disconnected", True),
        (KafkaError._TRANSPORT, "b:1/bootstrap: Connect to ipv4#b:1 failed: Connection refused", False),
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down", False),
    ],
)
def test_only_a_login_or_handshake_failure_is_a_refusal(code: int, text: str, refused: bool) -> None:
    assert (refusal(KafkaError(code, text)) == text) is refused


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[int]:
    """A TLS server on loopback (certificate from its own CA) that completes handshakes and hangs up."""
    pki = make_pki(tmp_path / "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the client refused our certificate: what the test wants
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_an_untrusted_broker_certificate_fails_at_once_naming_the_broker(
    tls_listener: int, tmp_path: Path
) -> None:
    other_ca = make_pki(tmp_path / "client").ca_cert  # a CA that signed nothing of the server's
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{tls_listener}", kafka_security_protocol="SSL", kafka_ssl_ca_file=other_ca
    )
    t0 = time.monotonic()
    with pytest.raises(DeliveryError, match="certificate verify failed") as failed:
        ensure_topics(settings, timeout=15)
    assert time.monotonic() - t0 < 5, "waited for the timeout instead of giving up"
    assert f"127.0.0.1:{tls_listener}" in str(failed.value)


def test_an_unreachable_broker_is_waited_for_until_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again below: connections to it are refused
    t0 = time.monotonic()
    with pytest.raises(DeliveryError, match="cannot list topics"):
        ensure_topics(Settings(kafka_bootstrap=f"127.0.0.1:{port}"), timeout=2)
    assert time.monotonic() - t0 >= 1.9  # a broker that is away may come back: no early give-up
