"""A Content-Security-Policy on the docs pages: the browser may load nothing from another origin.

The assets are served by the service (fastapi-offline); the policy makes that a rule the browser
enforces, so a future page change that points at a CDN fails visibly instead of loading it.
Inline script and style stay allowed: FastAPI's Swagger UI page starts the UI with an inline script.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class DocsPolicyMiddleware:
    """Adds the policy to the answers of ``paths`` (the docs pages); other requests pass untouched."""

    skips_hot_paths = True  # it concerns the docs pages only

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)
