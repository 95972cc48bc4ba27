"""Each child of ``run`` holds its own role's settings and secrets only, and none of the parent's
``BP_*`` variables (its secret files among them): read from the children's /proc/<pid>/environ."""

from __future__ import annotations

import ast
import io
import logging
import os
import time
from pathlib import Path

import pytest

from barcode_pipeline.config import ROLE_SECTIONS, Settings, role_env, role_reads, section_names
from barcode_pipeline.run.supervisor import Supervisor, pipeline_specs
from tests.test_architecture import _edges, _modules

SECRETS = {  # setting -> a marker only that setting holds
    "kafka_sasl_password": "KAFKA-ADMIN-SECRET",
    "ingest_kafka_sasl_password": "KAFKA-INGEST-SECRET",
    "processor_kafka_sasl_password": "KAFKA-PROCESSOR-SECRET",
    "redis_sentinel_password": "SENTINEL-SECRET",
    "ingest_api_key": "bpk_HARNESS-KEY-SECRET",
}
OWN = {  # what each role may hold, and nothing else of SECRETS
    "ingest": {"KAFKA-INGEST-SECRET", "SENTINEL-SECRET"},
    "processor": {"KAFKA-PROCESSOR-SECRET", "SENTINEL-SECRET"},
    "worker": {"SENTINEL-SECRET"},
}


def _reached(edges: dict[str, set[str]], start: str) -> set[str]:
    """``start`` and every product module it imports, however indirectly (function-local too)."""
    seen: set[str] = set()
    todo = [start, "barcode_pipeline.__main__"]  # a child runs as ``python -m barcode_pipeline <role>``
    while todo:
        if (module := todo.pop()) not in seen:
            seen.add(module)
            todo.extend(edges.get(module, ()))
    return seen


def _sections_read(paths: list[Path]) -> set[str]:
    """Every section these files read: ``<x>.kafka.bootstrap``, or ``settings.kafka`` handed on."""
    fields = section_names(Settings)
    read = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            if isinstance(node.value, ast.Attribute) and node.attr in fields.get(node.value.attr, ()):
                read.add(node.value.attr)
            holder = (
                node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
            )
            if node.attr in fields and (holder.endswith("settings") or holder == "s"):
                read.add(node.attr)
    return read


def test_each_role_is_started_with_every_section_its_code_reads() -> None:
    """A setting a role reads but is not given would silently take its default in that child."""
    modules = _modules()
    edges = _edges(modules)
    for role, given in ROLE_SECTIONS.items():
        reached = _reached(edges, f"barcode_pipeline.{role}.commands") - {"barcode_pipeline.config"}
        assert len(reached) > 10, role  # the entrypoint was found
        read = _sections_read([modules[m] for m in reached])
        assert read - set(given) == set(), role
    assert "db" not in ROLE_SECTIONS["processor"]  # least privilege: the processor has no database
    assert not any("accounts" in given for given in ROLE_SECTIONS.values())  # the shared names only


def _held(env: dict[str, str]) -> set[str]:
    values = " ".join(env.values())
    return {marker for marker in SECRETS.values() if marker in values}


def test_each_role_gets_its_own_credentials_under_the_shared_names() -> None:
    urls = {
        "db_url": "mysql://admin:DB-ADMIN@127.0.0.1:3307/barcode",
        "ingest_db_url": "mysql://ingest:DB-INGEST@127.0.0.1:3307/barcode",
        "worker_db_url": "mysql://worker:DB-WORKER@127.0.0.1:3307/barcode",
        "legacy_db_url": "mysql://legacy:DB-LEGACY@127.0.0.1:3307/barcode",
        "redis_url": "redis://admin:R-ADMIN@127.0.0.1:6380/0",
        "processor_redis_url": "redis://processor:R-PROCESSOR@127.0.0.1:6380/0",
        "ingest_redis_url": "redis://ingest:R-INGEST@127.0.0.1:6380/0",
        "worker_redis_url": "redis://worker:R-WORKER@127.0.0.1:6380/0",
    }
    settings = Settings(**urls, **SECRETS)
    everything = set(SECRETS.values()) | {u.split(":")[2].split("@")[0] for u in urls.values()}
    own = {
        "ingest": {"KAFKA-INGEST-SECRET", "SENTINEL-SECRET", "DB-INGEST", "R-INGEST"},
        "processor": {"KAFKA-PROCESSOR-SECRET", "SENTINEL-SECRET", "R-PROCESSOR"},
        "worker": {"SENTINEL-SECRET", "DB-WORKER", "R-WORKER"},
        "legacy": {"DB-LEGACY"},
    }
    for role, mine in own.items():
        env = role_env(settings, role)
        values = " ".join(env.values())
        assert {s for s in everything if s in values} == mine, role
    assert role_env(settings, "worker")["BP_DB_URL"] == urls["worker_db_url"]
    assert "BP_WORKER_DB_URL" not in role_env(settings, "worker")  # one name per setting in a child


@pytest.mark.integration
def test_the_children_of_run_hold_only_their_roles_secrets(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = stack_settings.updated(
        {**SECRETS, "state_dir": tmp_path / "state", "metrics_port_base": 0, "workers": 1}
    )
    secret_file = tmp_path / "worker-db-url"
    secret_file.write_text(settings.db.url)
    monkeypatch.setenv("BP_WORKER_DB_URL_FILE", str(secret_file))  # the parent's: never passed on
    sup = Supervisor(settings, pipeline_specs(settings, metrics=False), out=io.StringIO())
    sup.start()
    try:
        deadline = time.monotonic() + 30
        while not all(c.alive() for c in sup.children.values()):
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.1)
        for child in sup.children.values():
            assert child.pid is not None
            raw = Path(f"/proc/{child.pid}/environ").read_bytes()
            env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
            assert _held(env) == OWN[child.spec.role], child.spec.name
            given = {k.removeprefix("BP_").lower() for k in env if k.startswith("BP_")}
            assert given <= role_reads(child.spec.role), (
                child.spec.name,
                given - role_reads(child.spec.role),
            )
            assert "stack_profile" not in given and "ingest_db_url" not in given, child.spec.name
            assert not [k for k in env if k.endswith("_FILE") and k.startswith("BP_")], child.spec.name
    finally:
        sup.stop()
    assert os.environ["BP_WORKER_DB_URL_FILE"] == str(secret_file)


def test_a_secured_setup_without_a_roles_own_credentials_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With TLS or SASL, a child on the admin's account is worth a line; on a plaintext dev stack not."""
    plain = Settings(ingest_db_url="mysql://ingest:x@127.0.0.1:3307/barcode")
    secured = plain.updated({"kafka_security_protocol": "SASL_SSL"})
    with caplog.at_level(logging.WARNING, logger="barcode_pipeline.config"):
        role_env(plain, "ingest")
        assert not caplog.records
        role_env(secured, "ingest")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "ingest runs on the shared (admin) credentials" in line
    assert "BP_INGEST_REDIS_URL" in line and "BP_INGEST_KAFKA_SASL_USERNAME" in line
    assert "BP_INGEST_DB_URL" not in line  # it has its own
