"""The side port of a process that is not an HTTP service: ``GET /metrics`` and any JSON routes it adds.

The processor, the workers, the backlog exporter and the supervisor's liveness watchdog each answer
a scraper or a probe on a loopback port. They were served three ways (prometheus_client's own
server, and a hand-written one for the watchdog); here they are served one way, on a thread, with
the JSON error body of the services for anything else. The services themselves (ingest, legacy)
are uvicorn apps (web/server.py) and serve their /metrics there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from barcode_pipeline import names

log = logging.getLogger(__name__)

# A JSON route: the request path -> (status, the object to answer), or None when the path is not its.
Route = Callable[[str], tuple[int, Any] | None]


def serve_side_port(
    port: int,
    *,
    registry: CollectorRegistry = REGISTRY,
    routes: Sequence[Route] = (),
    host: str = "127.0.0.1",
) -> ThreadingHTTPServer:
    """Serve until ``shutdown()``; OSError when the port is taken (the caller decides if that matters)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API
            if self.path == names.ROUTE_METRICS:
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                return
            for route in routes:
                answer = route(self.path)
                if answer is not None:
                    self._send(answer[0], orjson.dumps(answer[1]), "application/json")
                    return
            body = {"error": "not_found", "message": f"no route {self.path}"}
            self._send(404, orjson.dumps(body), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: not worth a line
            log.debug("side port: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name=f"side-port-{port}").start()
    return server
