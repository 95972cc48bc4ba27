"""Bounds on a request's head (request line and headers): its size, and how long it may take to arrive.

uvicorn's httptools protocol has neither: the parser accumulates a header of any size in memory, and
a connection that never finishes its headers is held for ever (``timeout_keep_alive`` only runs
between requests). Without a key of their own, four connections streaming header lines grew an
ingest by hundreds of MB, and a few thousand dribbling ones starved keyed scanners. Here a head over
``max_head_bytes`` gets 431 and one not complete within ``head_timeout_s`` of its first byte gets 408;
a new connection that sends nothing for ``idle_timeout_s`` (uvicorn's keep-alive, which only starts
after a first response) gets 408 too; each closes the connection. Our heads are under 1 KB; a scanner
on a slow link sends one in a segment.
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from barcode_pipeline.web.onewrite import OneWriteHttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0  # as uvicorn's timeout_keep_alive (web/server.py): a pooled connection may wait
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def refusal(status: int, error: str, message: str) -> bytes:
    """A whole HTTP response with the project's JSON error body, closing the connection."""
    body = orjson.dumps({"error": error, "message": message, "field": "headers"})
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (status, _REASONS[status], len(body))
    )
    return head + body


class GuardedHttpToolsProtocol(OneWriteHttpToolsProtocol):
    """uvicorn's httptools protocol (one write per response) with a bounded request head."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S
    idle_timeout_s = IDLE_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.idle_timeout_s, self._too_slow
        )

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():  # refused: whatever else arrives is dropped unread
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(
                    431, "headers_too_large", f"request line and headers over {self.max_head_bytes} bytes"
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._stop_timer()  # the idle wait is over: the head itself has this long
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "headers_too_slow", "request headers not complete in time")

    def _refuse(self, status: int, error: str, message: str) -> None:
        self._stop_timer()
        log.debug("refused %s: %s", self.client, message)
        self.transport.write(refusal(status, error, message))
        self.transport.close()
