"""The Grafana dashboards' PromQL, and checking it against a real Prometheus.

Grafana is not installable here, so the proof that every panel shows data is: take every query
of ``deploy/grafana/dashboards/*.json``, substitute Grafana's interval variables, run it through
the Prometheus HTTP API and require at least one series (``monitor check-dashboards``; the
integration test does the same after a short load).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from barcode_pipeline.monitoring.promconfig import deploy_dir

# What Grafana would put in; $__rate_interval is at least four scrape intervals.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}


@dataclass(frozen=True, slots=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def promql(self) -> str:
        out = self.expr
        for name, value in GRAFANA_VARIABLES.items():
            out = out.replace(name, value)
        return out


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: PanelQuery
    series: int
    error: str | None = None


def dashboard_files() -> list[Path]:
    return sorted((deploy_dir() / "grafana" / "dashboards").glob("*.json"))


def _walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(_walk(panel.get("panels", [])))  # panels inside collapsed rows
    return out


def panel_queries(path: Path) -> list[PanelQuery]:
    data = json.loads(path.read_text())
    return [
        PanelQuery(path.name, panel.get("title", "?"), target.get("refId", "?"), target["expr"])
        for panel in _walk(data.get("panels", []))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def instant_query(base_url: str, promql: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /api/v1/query``; returns the decoded body (errors come back with status "error")."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback URL built from settings
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
        payload: dict[str, Any] = json.loads(exc.read() or b"{}")
        return payload or {"status": "error", "error": str(exc)}


def check(base_url: str, query: PanelQuery) -> QueryResult:
    body = instant_query(base_url, query.promql)
    if body.get("status") != "success":
        return QueryResult(query, 0, str(body.get("error", body)))
    return QueryResult(query, len(body.get("data", {}).get("result", [])))
