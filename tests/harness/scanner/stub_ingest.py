"""A real aiohttp ingest stand-in on 127.0.0.1 (ephemeral port) in a background thread.

Tests script its answers (outages, 207s, 4xx, slowness) and read what it received and which
scan IDs it acknowledged, to prove that nothing the simulator generated was lost.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

# (path, decoded JSON body, request number starting at 1) -> (status, JSON body, headers)
Behaviour = Callable[[str, Any, int], tuple[int, Any, dict[str, str]]]


def accept_all(path: str, body: Any, n: int) -> tuple[int, Any, dict[str, str]]:
    """What the ingest API answers when Kafka confirms everything."""
    del n
    if path.endswith("/barcodes"):
        return 200, {"total": len(body), "succeeded": len(body), "failedIndices": []}, {}
    return 202, {"scanId": body.get("scanId"), "status": "accepted"}, {}


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StubIngest:
    def __init__(self, behaviour: Behaviour = accept_all, *, delay_s: float = 0.0, port: int = 0) -> None:
        self.behaviour = behaviour
        self.delay_s = delay_s
        self.requests: list[tuple[str, Any, int]] = []  # path, body, status
        self.accepted: Counter[str] = Counter()  # scanId -> times acknowledged
        self.batch_sizes: list[int] = []
        self.authorization: Counter[str] = Counter()  # Authorization header values received
        self._lock = threading.Lock()
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.json_response({"detail": "malformed JSON"}, status=400)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        with self._lock:
            n = len(self.requests) + 1
            self.authorization[request.headers.get("Authorization", "")] += 1
            status, answer, headers = self.behaviour(request.path, body, n)
            self.requests.append((request.path, body, status))
            if 200 <= status < 300:
                if isinstance(body, list):
                    self.batch_sizes.append(len(body))
                    failed = set(answer.get("failedIndices", [])) if isinstance(answer, dict) else set()
                    self.accepted.update(item["scanId"] for i, item in enumerate(body) if i not in failed)
                else:
                    self.accepted[body["scanId"]] += 1
        return web.Response(
            body=orjson.dumps(answer), status=status, headers=headers, content_type="application/json"
        )

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._stop = asyncio.Event()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> StubIngest:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._serve(ready),), daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stub ingest did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        if self._loop is not None:
            self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> StubIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
