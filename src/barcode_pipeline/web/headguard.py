"""Bounds on a request's head (request line and headers): its size, and how long it may take to arrive.

uvicorn's httptools protocol has neither: the parser accumulates a header of any size in memory, and
a connection that never finishes its headers is held for ever (``timeout_keep_alive`` only runs
between requests). Without a key of their own, four connections streaming header lines grew an
ingest by hundreds of MB, and a few thousand dribbling ones starved keyed scanners. Here a head over
``max_head_bytes`` gets 431 and one not complete within ``head_timeout_s`` of its first byte gets 408;
a new connection that sends nothing for ``idle_timeout_s`` (uvicorn's keep-alive, which only starts
after a first response) gets 408 too. Each wait is drawn between its bound and half as long again:
connections opened together (an attacker's thousands, or every scanner after a network cut) are not
all cut, closed and reopened in the same few milliseconds of the event loop. Our heads are under
1 KB; a scanner on a slow link sends one in a segment.

A refused connection lingers before it is closed: the answer is followed by a FIN, reading stops, and
the socket is closed ``linger_s`` later. Closed at once with unread input, the kernel answers with a
reset that discards the refusal at the client (RFC 9112 9.6), and a client that reconnects at once
made the ingest accept, refuse and close over a thousand connections a second for four streaming
clients; lingering, each such client costs one connection per ``linger_s``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random

import orjson

from barcode_pipeline.web.onewrite import OneWriteHttpToolsProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 32 * 1024
HEAD_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0  # as uvicorn's timeout_keep_alive (web/server.py): a pooled connection may wait
LINGER_S = 2.0  # a refused connection stays open, unread, this long: its client reads the answer
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def spread(bound_s: float) -> float:
    """A wait of at least ``bound_s`` and at most half as long again, drawn anew for each connection."""
    return bound_s * (1.0 + 0.5 * random.random())  # spreading load, not a secret


@functools.lru_cache(maxsize=16)  # a handful of constant answers, built once
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
    linger_s = LINGER_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_head = True
        self._refused = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(
            spread(self.idle_timeout_s), self._too_slow
        )

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():  # whatever else arrives is dropped unread
            return
        super().data_received(data)
        if self._in_head and not self._refused and not self.transport.is_closing():
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
        self._head_timer = self.loop.call_later(spread(self.head_timeout_s), self._too_slow)

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
        if self._in_head and not self._refused and not self.transport.is_closing():
            self._refuse(408, "headers_too_slow", "request headers not complete in time")

    def _refuse(self, status: int, error: str, message: str) -> None:
        """Answer, send FIN, stop reading; close ``linger_s`` later (``connection_lost`` cancels that)."""
        self._stop_timer()
        self._refused = True
        log.debug("refused %s: %s", self.client, message)
        self.transport.write(refusal(status, error, message))
        self.transport.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._head_timer = self.loop.call_later(self.linger_s, self.transport.close)
