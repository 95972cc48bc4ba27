"""One write per response: the header block waits for the body within one loop iteration, no longer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from barcode_pipeline.web.onewrite import OneWriteHttpToolsProtocol, OneWriteTransport
from tests.web.serving import served

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def _wrapped() -> tuple[RecordingTransport, OneWriteTransport]:
    inner = RecordingTransport()
    return inner, OneWriteTransport(inner, asyncio.get_running_loop())


class RecordingTransport(asyncio.Transport):
    """Pure-logic stand-in for a socket transport: records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_headers_and_body_leave_in_one_write() -> None:
    asyncio.run(_test_headers_and_body_leave_in_one_write())


async def _test_headers_and_body_leave_in_one_write() -> None:
    inner, transport = _wrapped()
    transport.write(HEAD)
    assert inner.writes == []
    transport.write(b"{}")
    assert inner.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)
    assert inner.writes == [HEAD + b"{}"]  # the cancelled flush writes nothing more


def test_a_lone_header_block_goes_out_at_the_end_of_the_iteration() -> None:
    asyncio.run(_test_a_lone_header_block_goes_out_at_the_end_of_the_iteration())


async def _test_a_lone_header_block_goes_out_at_the_end_of_the_iteration() -> None:
    inner, transport = _wrapped()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    transport.write(b"body bytes")  # not a header block: straight through
    assert inner.writes[-1] == b"body bytes"


def test_close_writes_what_is_held_first() -> None:
    asyncio.run(_test_close_writes_what_is_held_first())


async def _test_close_writes_what_is_held_first() -> None:
    inner, transport = _wrapped()
    transport.write(HEAD)
    transport.close()
    assert inner.writes == [HEAD] and inner.closed
    await asyncio.sleep(0)
    assert inner.writes == [HEAD]


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/json")
    async def json_body() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            await asyncio.sleep(0.5)
            yield b"late chunk"

        return StreamingResponse(chunks(), media_type="text/plain")

    return app


@pytest.fixture
def server_port() -> Iterator[int]:
    with served(_app(), OneWriteHttpToolsProtocol) as port:
        yield port


def _recv_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(TimeoutError):
        while marker not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_keep_alive_requests_get_whole_responses(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port)) as sock:
        for _ in range(3):
            sock.sendall(b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = _recv_until(sock, b'{"ok":true}', 5)
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b'\r\n\r\n{"ok":true}')


def test_a_streamed_response_sends_its_headers_before_its_first_chunk(server_port: int) -> None:
    with socket.create_connection(("127.0.0.1", server_port)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        early = _recv_until(sock, b"\r\n\r\n", 0.3)  # the chunk comes after 0.5 s
        assert early.startswith(b"HTTP/1.1 200 OK\r\n") and b"late chunk" not in early
        assert b"late chunk" in _recv_until(sock, b"late chunk", 5)
