"""Kafka (librdkafka via confluent-kafka) client configs and topic administration."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)  # no public re-export
from confluent_kafka.cimpl import NewTopic

from barcode_pipeline import names
from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError, DeliveryError

log = logging.getLogger(__name__)


def connection_config(settings: Settings) -> dict[str, Any]:
    """Where Kafka is and how to talk to it: every client (producer, consumers, admin) starts from this."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka.bootstrap}
    protocol = settings.kafka.security_protocol
    if protocol == "PLAINTEXT":
        return conf
    conf["security.protocol"] = protocol
    if protocol.startswith("SASL"):
        if not settings.kafka.sasl_username or not settings.kafka.sasl_password:
            raise ConfigError(
                f"BP_KAFKA_SECURITY_PROTOCOL={protocol} needs BP_KAFKA_SASL_USERNAME and "
                "BP_KAFKA_SASL_PASSWORD (or BP_KAFKA_SASL_PASSWORD_FILE)"
            )
        conf |= {
            "sasl.mechanism": settings.kafka.sasl_mechanism,
            "sasl.username": settings.kafka.sasl_username,
            "sasl.password": settings.kafka.sasl_password,
        }
    if protocol.endswith("SSL"):
        conf["enable.ssl.certificate.verification"] = True
        conf["ssl.endpoint.identification.algorithm"] = "https"  # the broker's name must match
        for key, path in (
            ("ssl.ca.location", settings.kafka.ssl_ca_file),
            ("ssl.certificate.location", settings.kafka.ssl_cert_file),
            ("ssl.key.location", settings.kafka.ssl_key_file),
        ):
            if path is not None:
                conf[key] = str(path)
    return conf


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Durable producer: acks=all + idempotence, so retries never duplicate or reorder a partition."""
    conf: dict[str, Any] = {
        **connection_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.kafka.linger_ms,
        "max.in.flight.requests.per.connection": settings.kafka.producer_max_in_flight,
        "compression.type": "lz4",
        "message.timeout.ms": int(settings.kafka.produce_timeout_s * 1000),
        "socket.keepalive.enable": True,
        "socket.nagle.disable": True,  # a scan is a tiny write; don't let Nagle hold it back
        "reconnect.backoff.max.ms": 1000,
        **_bounds(settings),
    }
    conf.update(extra)
    return conf


def _bounds(settings: Settings) -> dict[str, Any]:
    """Bounds on every network request (commit, offsets, metadata, leave on close) and connect.

    ``flush``, ``poll``, ``consume``, ``list_topics`` and the offset queries take their own timeout
    at the call; a synchronous commit and ``close`` take none, so these bound them.
    """
    return {
        "socket.timeout.ms": settings.kafka.socket_timeout_ms,
        "socket.connection.setup.timeout.ms": settings.kafka.connect_timeout_ms,
    }


def consumer_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    """Manual commits only: offsets move after the downstream write is safe, never before."""
    conf: dict[str, Any] = {
        **connection_config(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.kafka.session_timeout_ms,
        "heartbeat.interval.ms": 1_000,
        "fetch.wait.max.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        **_bounds(settings),
    }
    if settings.kafka.debug:
        conf["debug"] = settings.kafka.debug
    conf.update(extra)
    return conf


def admin(settings: Settings) -> AdminClient:
    return AdminClient(admin_config(settings))


def admin_config(settings: Settings) -> dict[str, Any]:
    """Admin calls take a request timeout at the call; the socket bounds still apply underneath."""
    return {**connection_config(settings), **_bounds(settings)}


def ensure_topics(settings: Settings, timeout: float = 15.0) -> None:
    """Create the event topic and its dead-letter topic if absent (auto-creation is off on purpose).

    A broker that refuses this client (a wrong password, a certificate not trusted) fails it at
    once: waiting ``timeout`` would not cure it, and the caller's back-off should say so early.
    """
    errors: list[KafkaError] = []
    client = AdminClient(admin_config(settings), error_cb=errors.append)
    existing = _topic_names(client, errors, settings.kafka.bootstrap, timeout)
    rf = settings.kafka.topic_replication
    # Replicated: an acks=all write is on all but one replica, and no out-of-sync replica may lead.
    config = {"min.insync.replicas": str(rf - 1), "unclean.leader.election.enable": "false"} if rf > 2 else {}
    retention = retention_config(settings)
    wanted = [
        NewTopic(names.TOPIC, settings.kafka.topic_partitions, rf, config={**config, **retention}),
        NewTopic(names.DLT_TOPIC, 1, rf, config={**config, **retention}),
    ]
    missing = [t for t in wanted if t.topic not in existing]
    present = [t.topic for t in wanted if t.topic in existing]
    if present:
        _ensure_retention(client, present, retention, timeout)
    if not missing:
        return
    for topic, fut in client.create_topics(missing, request_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            raise DeliveryError(f"cannot create topic {topic}: {exc}", component="kafka") from exc
    _wait_for_leaders(client, [t.topic for t in missing], timeout)


def retention_config(settings: Settings) -> dict[str, str]:
    """The topics' retention, explicit: never the broker's default, which nobody watches."""
    return {
        "retention.ms": str(int(settings.kafka.topic_retention_hours * 3_600_000)),
        "retention.bytes": str(settings.kafka.topic_retention_bytes),
    }


def _ensure_retention(client: AdminClient, topics: list[str], wanted: dict[str, str], timeout: float) -> None:
    """Set the retention of existing topics where it differs (a setting changed since they were made)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in topics]
    for resource, fut in client.describe_configs(resources, request_timeout=timeout).items():
        try:
            current = {name: entry.value for name, entry in fut.result(timeout).items()}
        except KafkaException as exc:
            log.warning("cannot read the retention of %s: %s", resource.name, exc)
            continue
        changed = {name: value for name, value in wanted.items() if current.get(name) != value}
        if not changed:
            continue
        entries = [
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in changed.items()
        ]
        target = ConfigResource(ConfigResource.Type.TOPIC, resource.name, incremental_configs=entries)
        for _res, done in client.incremental_alter_configs([target], request_timeout=timeout).items():
            try:
                done.result(timeout)
                log.info("topic %s retention set to %s", resource.name, changed)
            except KafkaException as exc:
                log.warning("cannot set the retention of %s: %s", resource.name, exc)


def refusal(err: KafkaError) -> str | None:
    """Why this client and the broker cannot talk, if ``err`` is a failed login or TLS handshake.

    librdkafka reports these only to the error callback; its metadata request merely times out.
    A broker that is down or unreachable is no refusal: it may come back within the wait.
    """
    code, text = err.code(), err.str()
    if code in (KafkaError._AUTHENTICATION, KafkaError._SSL):
        return text
    if code == KafkaError._TRANSPORT and "SSL handshake failed" in text:
        return text
    return None


def _topic_names(
    client: AdminClient, errors: list[KafkaError], bootstrap: str, timeout: float, first_slice_s: float = 0.5
) -> set[str]:
    """The cluster's topics (``list_topics``) within ``timeout``, asked in growing slices so that
    the error callback (served by ``poll``) is read between them and a refusal ends the wait."""
    deadline = time.monotonic() + timeout
    slice_s = first_slice_s
    while True:
        try:
            wait = max(0.05, min(slice_s, deadline - time.monotonic()))
            return set(client.list_topics(timeout=wait).topics)
        except KafkaException as exc:
            client.poll(0)
            reason = next((r for err in errors if (r := refusal(err)) is not None), None)
            if reason is not None:
                what = f"cannot connect to {bootstrap} (login or TLS handshake failed): {reason}"
                raise DeliveryError(what, component="kafka") from exc
            if time.monotonic() >= deadline:
                raise DeliveryError(f"cannot list topics: {exc}", component="kafka") from exc
            slice_s *= 2  # a slow but healthy broker still gets long requests


def _wait_for_leaders(client: AdminClient, topics: list[str], timeout: float) -> None:
    """A created topic answers NOT_LEADER until its partitions have leaders: wait for that here,
    so no caller (offset queries, a replay, the first produce) sees the gap."""
    deadline = time.monotonic() + timeout
    while True:
        meta = client.list_topics(timeout=timeout).topics
        if all(
            name in meta
            and meta[name].partitions
            and all(p.leader >= 0 for p in meta[name].partitions.values())
            for name in topics
        ):
            return
        if time.monotonic() > deadline:
            raise DeliveryError(
                f"topics {topics} have no partition leaders after {timeout:.0f}s", component="kafka"
            )
        time.sleep(0.1)
