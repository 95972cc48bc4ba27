"""Sentinel auth: the client authenticates to password-protected Sentinels and to the primary.

Integration on Debian's real redis-server and redis-sentinel, started here on free loopback ports
(a primary with `requirepass`, one Sentinel with its own `requirepass` and `auth-pass` for the
primary), so the ha profile is not needed to prove the client side.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from barcode_pipeline.adapters.redis import client
from barcode_pipeline.adapters.sentinel import primary_address
from barcode_pipeline.config import Settings
from tests.stack_helpers import free_ports

pytestmark = pytest.mark.integration

PRIMARY_PASSWORD = "data-secret-1"
SENTINEL_PASSWORD = "sentinel-secret-2"
SERVICE = "bp-auth-test"


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:  # fail, never skip: the setup installs it
        pytest.fail(f"{name} is not installed (scripts/setup.sh installs it)")
    return found


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}: {last!r}")


@pytest.fixture(scope="module")
def sentinel_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(primary port, sentinel port), both password-protected."""
    work = tmp_path_factory.mktemp("sentinel-auth")
    base = free_ports(2)
    primary_port, sentinel_port = base, base + 1
    conf = work / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {work}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel auth-pass {SERVICE} {PRIMARY_PASSWORD}\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
    )
    procs = [
        subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(primary_port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PRIMARY_PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [_binary("redis-sentinel"), str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        ),
    ]
    try:
        sentinel = redis.Redis(port=sentinel_port, password=SENTINEL_PASSWORD, socket_timeout=2)
        _wait(
            lambda: sentinel.sentinel_master(SERVICE)["ip"] == "127.0.0.1", "the Sentinel to know the primary"
        )
        yield primary_port, sentinel_port
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def _settings(sentinel_port: int, *, sentinel_password: str, data_password: str) -> Settings:
    return Settings(
        redis_sentinels=f"127.0.0.1:{sentinel_port}",
        redis_service=SERVICE,
        redis_url=f"redis://:{data_password}@127.0.0.1:6379/0",  # host ignored: Sentinel names the primary
        redis_sentinel_password=sentinel_password,
    )


def test_the_client_authenticates_to_the_sentinels_and_to_the_primary(sentinel_pair: tuple[int, int]) -> None:
    primary_port, sentinel_port = sentinel_pair
    settings = _settings(sentinel_port, sentinel_password=SENTINEL_PASSWORD, data_password=PRIMARY_PASSWORD)
    assert primary_address(settings) == ("127.0.0.1", primary_port)
    r = client(settings, timeout=2.0)
    r.set("bp:sentinel-auth", "ok")
    assert r.get("bp:sentinel-auth") == "ok"


def test_a_wrong_sentinel_password_is_an_authentication_error(sentinel_pair: tuple[int, int]) -> None:
    _, sentinel_port = sentinel_pair
    wrong = _settings(sentinel_port, sentinel_password="not-it", data_password=PRIMARY_PASSWORD)
    with pytest.raises(redis.RedisError, match=r"(?i)auth|password|master"):
        primary_address(wrong)
    missing = _settings(sentinel_port, sentinel_password="", data_password=PRIMARY_PASSWORD)
    with pytest.raises(redis.RedisError):
        primary_address(missing)


def test_a_wrong_primary_password_is_refused_by_the_primary(sentinel_pair: tuple[int, int]) -> None:
    _, sentinel_port = sentinel_pair
    settings = _settings(sentinel_port, sentinel_password=SENTINEL_PASSWORD, data_password="not-it")
    with pytest.raises(redis.AuthenticationError):
        client(settings, timeout=2.0).ping()
