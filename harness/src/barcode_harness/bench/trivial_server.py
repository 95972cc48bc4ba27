"""A trivial HTTP endpoint that answers like the ingest API, at once, without doing any work.

Load reports run the same load against it to measure the load generator's own cost: whatever
latency the generator sees here is client (and kernel) overhead, not server work. It is a raw
asyncio protocol with the C ``httptools`` parser on uvloop (both already installed with
``uvicorn[standard]``), so it is far cheaper per request than the client driving it.

Routes: ``POST /ingest/barcode`` -> 202 ``{"scanId", "status": "accepted"}``;
``POST /ingest/barcodes`` -> 200 ``{"total", "succeeded", "failedIndices": []}``;
``GET /health`` -> 200; anything else -> 404; an unreadable body -> 400.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import httptools
import orjson

from barcode_pipeline import names
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Status")),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"connection: keep-alive\r\n\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body,
        )
    )


_SCAN = names.ROUTE_SCAN.encode()
_BATCH = names.ROUTE_BATCH.encode()


def answer(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    """The status and body for one request (pure, so tests can check it without sockets)."""
    if path == _SCAN:
        if method != b"POST":
            return 405, b'{"detail":"method not allowed"}'
        try:
            scan = orjson.loads(body)
            scan_id = scan.get("scanId") if isinstance(scan, dict) else None
        except orjson.JSONDecodeError:
            return 400, b'{"detail":"malformed JSON"}'
        return 202, orjson.dumps({"scanId": scan_id, "status": "accepted"})
    if path == _BATCH:
        if method != b"POST":
            return 405, b'{"detail":"method not allowed"}'
        try:
            scans = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, b'{"detail":"malformed JSON"}'
        if not isinstance(scans, list):
            return 400, b'{"detail":"a batch is a JSON array"}'
        return 200, orjson.dumps({"total": len(scans), "succeeded": len(scans), "failedIndices": []})
    if path in (b"/health", b"/ready"):
        return 200, b'{"status":"ok"}'
    return 404, b'{"detail":"not found"}'


class _Protocol(asyncio.Protocol):
    """One keep-alive connection; pipelined requests are answered in order."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_response(400, b'{"detail":"bad request"}', False))
                self._transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        status, body = answer(self._parser.get_method(), self._url.split(b"?", 1)[0], b"".join(self._body))
        self._url = b""
        self._body.clear()
        if self._transport is not None:
            self._transport.write(_response(status, body, keep_alive))
            if not keep_alive:
                self._transport.close()


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def start_server(host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False) -> asyncio.Server:
    """Start listening on the running loop; ``server.sockets[0].getsockname()[1]`` is the port."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(_Protocol, sock=_bind(host, port, reuse_port))


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve_forever(
    host: str, port: int, *, reuse_port: bool = False, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve in this process until interrupted."""

    async def main() -> None:
        server = await start_server(host, port, reuse_port=reuse_port)
        bound = server.sockets[0].getsockname()[1]
        log.info("trivial endpoint listening on http://%s:%d", host, bound)
        if on_ready is not None:
            on_ready(bound)
        async with server:
            await server.serve_forever()

    with asyncio.Runner(loop_factory=_new_loop) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(main())


def _child(host: str, port: int, conn: multiprocessing.connection.Connection) -> None:
    logging.basicConfig(level=logging.WARNING)
    serve_forever(host, port, reuse_port=True, on_ready=conn.send)


@dataclass
class TrivialServerProcess:
    """The endpoint in ``processes`` child processes sharing one port (SO_REUSEPORT): a context manager.

    Separate processes, so its CPU is not charged to the load generator's event loop.
    """

    host: str = "127.0.0.1"
    port: int = 0
    processes: int = 1

    def __post_init__(self) -> None:
        self._procs: list[Any] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TrivialServerProcess:
        ctx = multiprocessing.get_context("spawn")
        for _ in range(self.processes):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(self.host, self.port, child), daemon=True)
            proc.start()
            child.close()
            self._procs.append(proc)
            try:
                if not parent.poll(30):
                    raise EOFError
                self.port = int(parent.recv())
            except EOFError:
                self.stop()
                raise PipelineError("the trivial endpoint did not start", component="bench") from None
            finally:
                parent.close()
        return self

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self._procs.clear()

    def __enter__(self) -> TrivialServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def trivial_server_thread(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The endpoint on its own event loop in a background thread (for tests); yields its base URL."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        server = await start_server(host, port)
        state["port"] = server.sockets[0].getsockname()[1]
        state["stop"] = asyncio.Event()
        ready.set()
        async with server:
            await state["stop"].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("trivial server did not start")
    try:
        yield f"http://{host}:{state['port']}"
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--processes", type=int, default=1, help="server processes sharing the port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trivial %(levelname)s %(message)s")
    if args.processes <= 1:
        serve_forever(args.host, args.port)
        return
    with TrivialServerProcess(args.host, args.port, args.processes) as server:
        log.info("%d processes on %s; Ctrl-C stops", args.processes, server.url)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
