"""Clients for drain tests: a request held in flight across a SIGTERM, and senders that keep sending.

A drain must answer every request it has started. Connection-level refusals after the listener
closed are expected; a request that got no answer counts against the server only if the server
had taken it (its scan reached Kafka or the database), which the tests check with those sets.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson


class HeldRequest:
    """``POST /ingest/barcode`` on a raw socket, headers and part of the body sent, the rest later."""

    def __init__(
        self,
        port: int,
        body: dict[str, Any],
        *,
        timeout_s: float = 15.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self._payload = orjson.dumps(body)
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (
            "POST /ingest/barcode HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            f"{extra}Content-Length: {len(self._payload)}\r\n\r\n"
        )
        self._sock.sendall(head.encode() + self._payload[:10])

    def finish(self) -> bytes:
        """Send the rest of the body; everything the server answers until it closes the connection."""
        self._sock.sendall(self._payload[10:])
        reply = b""
        while chunk := self._sock.recv(65536):
            reply += chunk
        self._sock.close()
        return reply


class Senders:
    """Threads posting single scans in a loop on keep-alive connections until the server drains."""

    def __init__(
        self,
        base_url: str,
        make_scan: Callable[[], dict[str, Any]],
        *,
        threads: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        self.make_scan = make_scan
        self.answered: list[tuple[str, int]] = []  # (scanId, status)
        self.failed: list[tuple[str, str]] = []  # requests that got no answer: (scanId, error)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wait_answers(self, count: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered) < count:
            assert any(t.is_alive() for t in self._threads), f"senders stopped early: {self.failed[:3]}"
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout_s:.0f}s"
            time.sleep(0.01)

    def join(self, timeout_s: float) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
            assert not thread.is_alive()

    def acknowledged(self) -> set[str]:
        return {scan_id for scan_id, status in self.answered if 200 <= status < 300}

    def _loop(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=15, headers=self.headers) as client:
            while not self._stop.is_set():
                body = self.make_scan()
                try:
                    reply = client.post("/ingest/barcode", content=orjson.dumps(body))
                except httpx.ConnectError:
                    return  # the listener is closed: draining, and this request was never sent
                except httpx.TransportError as exc:
                    self.failed.append((body["scanId"], repr(exc)))
                    return
                self.answered.append((body["scanId"], reply.status_code))
                if reply.headers.get("connection") == "close":
                    return  # the server said it is draining


def unique_scan_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"
