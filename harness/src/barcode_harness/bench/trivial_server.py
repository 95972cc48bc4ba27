"""A trivial HTTP endpoint that answers like the ingest API, at once, without doing any work.

The latency the load generator sees here is its own (and the kernel's) cost, not server work; on uvloop
with the C ``httptools`` parser it is far cheaper per request than the client driving it.
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
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson
import uvloop

from barcode_pipeline import names
from barcode_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}
_SCAN = names.ROUTE_SCAN.encode()
_BATCH = names.ROUTE_BATCH.encode()


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
    reason = _REASONS.get(status, b"Status")
    return head % (status, reason, len(body), b"keep-alive" if keep_alive else b"close") + body


def answer(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes]:
    """The status and body for one request (pure, so tests can check it without sockets)."""
    if path in (b"/health", b"/ready"):
        return 200, b'{"status":"ok"}'
    if path not in (_SCAN, _BATCH):
        return 404, b'{"detail":"not found"}'
    if method != b"POST":
        return 405, b'{"detail":"method not allowed"}'
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, b'{"detail":"malformed JSON"}'
    if path == _SCAN:
        scan_id = payload.get("scanId") if isinstance(payload, dict) else None
        return 202, orjson.dumps({"scanId": scan_id, "status": "accepted"})
    if not isinstance(payload, list):
        return 400, b'{"detail":"a batch is a JSON array"}'
    return 200, orjson.dumps({"total": len(payload), "succeeded": len(payload), "failedIndices": []})


class _Protocol(asyncio.Protocol):
    """One keep-alive connection; pipelined requests are answered in order (httptools calls ``on_*``)."""

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.write(_response(400, b'{"detail":"bad request"}', False))
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        status, body = answer(self._parser.get_method(), self._url.split(b"?", 1)[0], b"".join(self._body))
        self._url = b""
        self._body.clear()
        self._transport.write(_response(status, body, keep_alive))
        if not keep_alive:
            self._transport.close()


def _child(host: str, port: int, ports: Any) -> None:
    """A server process: puts its port on ``ports`` once it listens, then serves until killed."""
    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Protocol, host, port, reuse_port=True, backlog=4096
        )
        ports.put(server.sockets[0].getsockname()[1])
        async with server:
            await server.serve_forever()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(main())


@dataclass
class TrivialServerProcess:
    """The endpoint in ``processes`` child processes sharing one port (SO_REUSEPORT): a context manager.

    Separate processes, so its CPU is not charged to the load generator's event loop.
    """

    host: str = "127.0.0.1"
    port: int = 0
    processes: int = 1
    _procs: list[Any] = field(default_factory=list, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TrivialServerProcess:
        ctx = multiprocessing.get_context("spawn")
        ports = ctx.Queue()
        for _ in range(self.processes):
            self._procs.append(ctx.Process(target=_child, args=(self.host, self.port, ports), daemon=True))
            self._procs[-1].start()
            try:
                self.port = int(ports.get(timeout=30))
            except queue.Empty:
                self.stop()
                raise PipelineError("the trivial endpoint did not start", component="bench") from None
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--processes", type=int, default=1, help="server processes sharing the port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trivial %(levelname)s %(message)s")
    with TrivialServerProcess(args.host, args.port, max(1, args.processes)) as server:
        log.info("trivial endpoint: %d process(es) on %s; Ctrl-C stops", server.processes, server.url)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
