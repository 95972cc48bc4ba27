"""HTTP clients and a precise pacer for the open-loop load generator.

Why a raw client: an aiohttp request costs ~150-200 µs of CPU here (3,000-4,000 req/s a process); HTTP/1.1
keep-alive on asyncio protocols with the C ``httptools`` parser and no task per request is several times
cheaper, so the generator measures the server, not itself. aiohttp stays as a cross-check.
Why a timerfd: asyncio timers have 1 ms granularity, so a sleep-paced schedule would charge up to 1 ms of
its own lateness to the server; a Linux ``timerfd`` wakes the loop within tens of microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast
from urllib.parse import urlsplit

import aiohttp
import httptools

from barcode_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

# failure kinds (keys of the error counts, next to HTTP status codes)
CONNECT_ERROR = "connect_error"
DISCONNECTED = "disconnected"
TIMEOUT = "timeout"
PROTOCOL_ERROR = "protocol_error"


@dataclass(slots=True)
class Request:
    """One scheduled request. Times are ``time.monotonic()`` seconds."""

    intended: float
    body: bytes
    scan_ids: list[str]
    sent: float = 0.0


class Sink(Protocol):
    """Where a client reports what happened to each request (exactly once per request)."""

    def on_response(self, req: Request, status: int, body: bytes, done: float) -> None: ...

    def on_failure(self, req: Request, kind: str, done: float) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where a client sends its requests, and how many it keeps in flight for how long at most."""

    url: str
    path: str
    max_connections: int
    timeout_s: float
    keep_body: bool = True  # keep each answer's body (batch answers name what to resend)
    headers: Mapping[str, str] = field(default_factory=dict)


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"the load generator speaks plain http://, got {url!r}", component="loadgen")
    return parts.hostname, parts.port or 80


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time (httptools calls its ``on_*``)."""

    __slots__ = ("_body", "_client", "_parser", "req", "transport")
    transport: asyncio.Transport

    def __init__(self, client: RawHttpClient) -> None:
        self._client = client
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self.req: Request | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def send(self, req: Request) -> None:
        self.req = req
        req.sent = time.monotonic()
        self.transport.write(b"%s%d\r\n\r\n%s" % (self._client.head, len(req.body), req.body))

    def fail(self, kind: str, now: float) -> None:
        """Report the request in flight (if any) as failed; the connection carries no request after."""
        req, self.req = self.req, None
        if req is not None:
            self._client.sink.on_failure(req, kind, now)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail(PROTOCOL_ERROR, time.monotonic())
            self.transport.abort()

    def on_body(self, body: bytes) -> None:
        if self._client.keep_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        done = time.monotonic()
        req, self.req = self.req, None
        body = b"".join(self._body)
        self._body.clear()
        if req is not None:
            self._client.sink.on_response(req, self._parser.get_status_code(), body, done)
        self._client.released(self, self._parser.should_keep_alive())

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(DISCONNECTED, time.monotonic())
        self._client.lost(self)


class RawHttpClient:
    """Keep-alive connection pool without pipelining: at most ``max_connections`` requests in flight.

    A request due while every connection is busy waits in a FIFO backlog (its wait counts in the
    latency from its scheduled time); one that waited longer than the timeout fails as ``timeout``.
    """

    def __init__(self, target: Target, sink: Sink) -> None:
        self.host, self.port = split_url(target.url)
        self.sink = sink
        self.keep_body = target.keep_body
        self._max = target.max_connections
        self._timeout = target.timeout_s
        host_header = self.host if self.port == 80 else f"{self.host}:{self.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in target.headers.items())
        self.head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: bp-loadgen\r\n{extra}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._idle: list[_Conn] = []
        self._conns: set[_Conn] = set()
        self._connecting = 0
        self._backlog: deque[Request] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.connections_opened = 0

    @property
    def busy(self) -> int:
        return len(self._backlog) + sum(1 for c in self._conns if c.req is not None)

    async def start(self, warm_connections: int) -> None:
        """Open some connections before the clock starts, so the first second is not a connect storm."""
        for _ in range(min(warm_connections, self._max)):
            self._connecting += 1
            if (exc := await self._connect()) is not None:  # the run goes on and counts connect errors
                log.warning("cannot connect to %s:%d before the run: %s", self.host, self.port, exc)
                break
        self._sweep()

    def submit(self, req: Request) -> None:
        if self._idle:
            self._idle.pop().send(req)
        else:
            self._backlog.append(req)
            self._grow()

    def _grow(self) -> None:
        """Open one more connection if requests wait and the pool may grow."""
        if self._backlog and not self._closed and len(self._conns) + self._connecting < self._max:
            self._connecting += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> OSError | None:
        """Add a connection to the pool; if it cannot be opened, the oldest waiting request fails instead."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as exc:
            self._connecting -= 1
            if self._backlog:  # the next request gets its own attempt
                self.sink.on_failure(self._backlog.popleft(), CONNECT_ERROR, time.monotonic())
            self._grow()
            return exc
        self._connecting -= 1
        self.connections_opened += 1
        self._conns.add(conn)
        self.released(conn, True)
        return None

    def released(self, conn: _Conn, keep_alive: bool) -> None:
        """A connection finished a request (or just opened): give it the next one or park it."""
        if not keep_alive or self._closed:
            conn.transport.close()  # connection_lost() removes it and reopens if work is waiting
        elif self._backlog:
            conn.send(self._backlog.popleft())
        else:
            self._idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        self._grow()

    def _expire(self, kind: str, max_age_s: float) -> None:
        """Fail requests older than ``max_age_s``: in flight (connection aborted) or still queued."""
        now = time.monotonic()
        for conn in list(self._conns):
            if conn.req is not None and now - conn.req.sent > max_age_s:
                conn.fail(kind, now)
                conn.transport.abort()
        while self._backlog and now - self._backlog[0].intended > max_age_s:
            self.sink.on_failure(self._backlog.popleft(), kind, now)

    def _sweep(self) -> None:
        self._expire(TIMEOUT, self._timeout)
        if not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(min(0.1, self._timeout / 10), self._sweep)

    def abandon_all(self, kind: str) -> None:
        """End of the run: whatever is still queued or in flight is reported as ``kind``."""
        self._expire(kind, -math.inf)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self._conns):
            conn.transport.close()
        await asyncio.sleep(0)


class AiohttpClient:
    """The same contract on aiohttp (a task per request; the pool wait counts in service time)."""

    def __init__(self, target: Target, sink: Sink) -> None:
        split_url(target.url)
        self._target = target
        self._url = target.url.rstrip("/") + target.path
        self.sink = sink
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandon_kind = DISCONNECTED
        self.connections_opened = 0

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def start(self, warm_connections: int) -> None:
        target, warm = self._target, min(warm_connections, self._target.max_connections)
        session = self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=target.max_connections, limit_per_host=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=target.timeout_s),
            headers={"Content-Type": "application/json", "User-Agent": "bp-loadgen", **target.headers},
            skip_auto_headers=("Accept-Encoding",),
        )

        async def ping() -> None:  # warms the pool in parallel; the answers do not matter
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(self._url.rsplit("/ingest", 1)[0] + "/health") as resp:
                    await resp.read()

        await asyncio.gather(*(ping() for _ in range(warm)))

    def submit(self, req: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._one(req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, req: Request) -> None:
        assert self._session is not None
        req.sent = time.monotonic()
        try:
            async with self._session.post(self._url, data=req.body) as resp:
                body = await resp.read()
                self.sink.on_response(req, resp.status, body, time.monotonic())
        except TimeoutError:
            self.sink.on_failure(req, TIMEOUT, time.monotonic())
        except aiohttp.ClientConnectorError:
            self.sink.on_failure(req, CONNECT_ERROR, time.monotonic())
        except (aiohttp.ClientError, OSError):
            self.sink.on_failure(req, DISCONNECTED, time.monotonic())
        except asyncio.CancelledError:
            self.sink.on_failure(req, self._abandon_kind, time.monotonic())
            raise

    def abandon_all(self, kind: str) -> None:
        self._abandon_kind = kind
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        self.abandon_all(self._abandon_kind)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


async def pace(fire: Callable[[float], float | None], first: float) -> bool:
    """Call ``fire(now)`` at (or just after) absolute ``time.monotonic()`` instants, from ``first`` on.

    ``fire`` does what is due and returns the next instant, or None when the schedule is over. Returns
    whether the pacing was precise (a timerfd) rather than asyncio's millisecond timers.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC) if _LIBC is not None else -1
    timerspec = (ctypes.c_long * 4)()  # struct itimerspec: interval (s, ns), value (s, ns)
    handle: asyncio.TimerHandle | None = None

    def arm(at: float) -> None:
        nonlocal handle
        if fd < 0 or _LIBC is None:
            handle = loop.call_later(max(0.0, at - time.monotonic()), tick)
            return
        timerspec[2], timerspec[3] = divmod(max(1, int(at * 1_000_000_000)), 1_000_000_000)
        if _LIBC.timerfd_settime(fd, _TFD_TIMER_ABSTIME, timerspec, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def tick() -> None:
        if done.done():
            return
        try:
            nxt = fire(time.monotonic())
        except BaseException as exc:
            done.set_exception(exc)
            return
        if nxt is None:
            done.set_result(None)
        else:
            arm(nxt)

    def on_timerfd() -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 8)
        tick()

    if fd >= 0:
        loop.add_reader(fd, on_timerfd)
    try:
        arm(first)
        await done
    finally:
        if fd >= 0:
            loop.remove_reader(fd)
            os.close(fd)
        if handle is not None:
            handle.cancel()
    return fd >= 0
