"""The one side port of the processor, workers, exporter and watchdog: /metrics, JSON routes, JSON 404."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from barcode_pipeline.run.watchdog import health_routes
from barcode_pipeline.web.sideport import serve_side_port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_metrics_json_routes_and_a_json_404() -> None:
    registry = CollectorRegistry()
    Counter("bp_side_port_test", "a counter", registry=registry).inc(3)
    report: dict[str, Any] = {
        "stalled": [],
        "services": {"worker-1": {"state": "ok"}, "processor": {"state": "stalled"}},
    }
    port = _free_port()
    server = serve_side_port(port, registry=registry, routes=[health_routes(lambda: report)])
    try:
        status, body, kind = _get(port, "/metrics")
        assert status == 200 and b"bp_side_port_test_total 3.0" in body and kind.startswith("text/plain")
        assert _get(port, "/health")[0] == 200
        report["stalled"] = ["processor"]
        status, body, kind = _get(port, "/health")
        assert status == 503 and orjson.loads(body)["stalled"] == ["processor"] and kind == "application/json"
        assert _get(port, "/health/worker-1")[0] == 200 and _get(port, "/health/processor")[0] == 503
        for missing in ("/health/nobody", "/nothing"):
            status, body, _ = _get(port, missing)
            assert status == 404 and orjson.loads(body)["error"] == "not_found"
        with pytest.raises(OSError):
            serve_side_port(port, registry=registry)  # taken: the caller decides what that means
    finally:
        server.shutdown()
        server.server_close()
