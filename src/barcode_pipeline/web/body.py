"""Reading a request body without trusting its size, and decoding it as JSON.

Both services refuse an oversized body without buffering it: ``Content-Length`` is checked first (no
read at all for an honest oversize request), and the read itself is capped, because a chunked
request has no length up front.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope

from barcode_pipeline.web.contract import error_response, malformed_json, too_large


class BodyTooLarge(Exception):
    """The request body exceeds the configured limit (maps to 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class BadBody(Exception):
    """The body could not be read (client went away mid-body)."""


def declared_too_large(scope: Scope, limit: int) -> bool:
    """``Content-Length`` says the body is over ``limit`` (so it need not be read at all)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return bool(value.isdigit() and int(value) > limit)
    return False


async def read_capped(receive: Receive, limit: int) -> bytes:
    """Collect ASGI ``http.request`` messages up to ``limit`` bytes (usually one message, no copy)."""
    first = b""
    chunks: list[bytes] | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadBody("client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            if not first:
                first = chunk
            else:
                if chunks is None:
                    chunks = [first]
                chunks.append(chunk)
        if not message.get("more_body", False):
            return first if chunks is None else b"".join(chunks)


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | Response:
    """The raw body, or the error response to send instead (413 before reading if declared too big)."""
    if declared_too_large(scope, limit):
        return too_large(str(BodyTooLarge(limit)))
    try:
        return await read_capped(receive, limit)
    except BodyTooLarge as exc:
        return too_large(str(exc))
    except BadBody as exc:
        return error_response(400, "malformed_json", str(exc))


def decode_json(body: bytes) -> object | Response:
    """The decoded JSON value, or the 400 to send instead."""
    try:
        decoded: object = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return malformed_json(exc)
    return decoded


async def read_json(scope: Scope, receive: Receive, limit: int) -> object | Response:
    """The decoded JSON body, or the error response to send instead."""
    body = await read_body(scope, receive, limit)
    return body if isinstance(body, Response) else decode_json(body)
