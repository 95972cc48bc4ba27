"""Small helpers for tests that carve their own room out of the shared stack."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

SMALL_REDIS_DISK_BYTES = 16 * 2**20  # the tmpfs under the ``redis_on_small_disk`` fixture's data


def fill_redis_disk(client: redis.Redis, data: Path) -> Path:
    """Fill the disk under a scratch Redis until it refuses writes (MISCONF); returns the ballast,
    whose removal frees the disk again. A ballast file leaves a little room, which the AOF fills."""
    ballast = data / "ballast"
    ballast.write_bytes(b"\0" * (SMALL_REDIS_DISK_BYTES - 2 * 2**20))
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        for i in range(100_000):
            client.set(f"fill:{i}", b"x" * 4096)
    return ballast


def redis_db(url: str, db: int) -> str:
    """The same Redis server as ``url`` (the stack's, whatever its port), database ``db``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


class FreezableRelay:
    """A loopback TCP relay to a real server that can stop passing bytes, as a frozen server would.

    While frozen, connections stay open and requests go unanswered (the bytes wait in the relay),
    so a client blocks in its read until its own timeout: what a SIGSTOPped server does to it,
    without freezing a server other tests share.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []

    def start(self) -> None:
        self._listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                self._flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # read before the freeze: held until the thaw
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        self._flowing.set()
        for sock in [*self._sockets, self._listener]:
            with contextlib.suppress(OSError):
                sock.close()


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (for a child's port range)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``check``; returns the seconds it took, fails the test after ``timeout``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - t0


def retry_until(
    call: Callable[[], object], errors: type[Exception], failure: str, timeout: float = 10.0
) -> None:
    """Call until it stops raising ``errors``; fail the test with ``failure`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except errors:
            assert time.monotonic() < deadline, failure
            time.sleep(0.1)


class ScratchRedis:
    """A redis-server of the test's own (AOF on), which a test may SIGKILL and start again on the
    same port and data directory, or start from a copy of its data taken earlier: a Redis that
    lost its last writes, as one whose AOF write was still postponed behind an fsync does."""

    def __init__(self, data: Path, *, appendfsync: str = "everysec") -> None:
        self.data = data
        self.port = free_ports()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._appendfsync = appendfsync
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server, "redis-server not found: run scripts/setup.sh"
        self._proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data),
             "--appendonly", "yes", "--appendfsync", self._appendfsync, "--save", "",
             "--auto-aof-rewrite-percentage", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        try:
            retry_until(client.ping, redis.ConnectionError, "scratch redis-server did not start")
        finally:
            client.close()

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def snapshot(self, to: Path) -> Path:
        """A copy of the data as it is now (take it while nothing writes; ``always`` makes it whole)."""
        shutil.copytree(self.data, to)
        return to

    def restart_from(self, snapshot: Path) -> None:
        """SIGKILL, then start again on ``snapshot``'s data: whatever was written since is gone."""
        self.kill()
        shutil.rmtree(self.data)
        shutil.copytree(snapshot, self.data)
        self.start()
