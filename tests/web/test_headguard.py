"""Bounded request heads on a real uvicorn server: an oversized head gets 431, a slow one 408, both
with the JSON error body and an orderly close after a linger; ordinary and large-bodied requests pass."""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time
from collections.abc import Iterator

import orjson
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from barcode_pipeline.web.headguard import GuardedHttpToolsProtocol
from barcode_pipeline.web.server import raise_descriptor_limit
from tests.web.serving import served


class QuickGuard(GuardedHttpToolsProtocol):
    head_timeout_s = 0.5  # the production bounds are 10 s and 30 s; the behaviour is the same
    idle_timeout_s = 1.0
    linger_s = 1.5


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"bytes": len(await request.body())})

    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with served(_app(), QuickGuard, loop="uvloop") as chosen:
        yield chosen


def _reply(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _reply_and_ending(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, str]:
    """What the server sent, and how the connection ended: "eof" (its FIN), "reset" or "timeout"."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return data, "timeout"
    except ConnectionResetError:
        return data, "reset"
    return data, "eof"


def _error(reply: bytes) -> dict[str, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    parsed: dict[str, str] = orjson.loads(body)
    return parsed


def test_ordinary_and_large_bodied_requests_pass(port: int) -> None:
    body = b"x" * 300_000  # far over the head bound: the body is not counted as head
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for payload in (b"{}", body):
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload)
            )
            sock.settimeout(5)
            reply = sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200 OK") and b'{"bytes":%d}' % len(payload) in reply


def test_an_oversized_head_gets_431_and_is_not_read_on(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(200):  # up to 10 MB of header lines, as an attacker streams them
                sock.sendall(b"X-Pad: " + b"a" * 50_000 + b"\r\n")
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert _error(reply)["error"] == "headers_too_large" and _error(reply)["field"] == "headers"


def test_a_refused_client_still_sending_reads_the_whole_refusal_then_the_end(port: int) -> None:
    """Closed at once with its input unread, the server's kernel resets the connection and the client
    may lose the 431; lingering, the answer arrives whole, then an end of stream, and the server stops
    reading (the client's sends block) until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        sock.settimeout(0.5)
        sent = 0
        with contextlib.suppress(TimeoutError):
            while sent < 100 * 2**20:  # header lines as fast as they are taken, until the sends block
                sent += sock.send(b"X-Pad: " + b"a" * 50_000 + b"\r\n")
        assert sent < 50 * 2**20, "the refused connection was read on"
        started = time.monotonic()
        reply, ending = _reply_and_ending(sock)
    assert reply.startswith(b"HTTP/1.1 431 ") and _error(reply)["error"] == "headers_too_large"
    assert ending == "eof" and time.monotonic() - started < 1.0


def test_a_head_that_does_not_finish_in_time_gets_408(port: int) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(20):  # a byte every 0.1 s: never complete
                sock.sendall(b"X")
                time.sleep(0.1)
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and _error(reply)["error"] == "headers_too_slow"
    assert time.monotonic() - started < 3
    with socket.create_connection(("127.0.0.1", port)) as silent:  # connected, sends nothing at all
        started = time.monotonic()
        assert _reply(silent).startswith(b"HTTP/1.1 408 ")
        assert 0.9 < time.monotonic() - started < 3  # the idle bound, not the head's


def test_a_server_raises_its_descriptor_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
    try:
        assert raise_descriptor_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_opened_together_are_not_cut_together(port: int) -> None:
    """Silent connections opened at once get their 408s spread over the idle bound and up to half as
    long again, never sooner: one timer for all would cut, close and reopen them in one burst."""
    started = time.monotonic()
    waiting = {socket.create_connection(("127.0.0.1", port)): 0 for _ in range(40)}
    cut_at: list[float] = []
    with selectors.DefaultSelector() as selector:
        for sock in waiting:
            selector.register(sock, selectors.EVENT_READ)
        while len(cut_at) < len(waiting) and time.monotonic() - started < 10:
            for key, _events in selector.select(timeout=0.01):
                cut_at.append(time.monotonic() - started)
                selector.unregister(key.fileobj)
                assert _reply(key.fileobj).startswith(b"HTTP/1.1 408 ")
    for sock in waiting:
        sock.close()
    assert len(cut_at) == len(waiting)
    assert min(cut_at) >= QuickGuard.idle_timeout_s * 0.95
    assert max(cut_at) <= QuickGuard.idle_timeout_s * 1.5 + 1.0
    assert max(cut_at) - min(cut_at) >= 0.2 * QuickGuard.idle_timeout_s, cut_at
