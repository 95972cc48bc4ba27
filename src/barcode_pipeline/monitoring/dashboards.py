"""The Grafana dashboards' PromQL, and checking it against a real Prometheus.

Grafana is not installable here, so the proof that every panel shows data is: take every query
of ``deploy/grafana/dashboards/*.json``, substitute Grafana's interval variables, run it through
the Prometheus HTTP API and require at least one series (``monitor check-dashboards``; the
integration test does the same after a short load).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from barcode_pipeline.monitoring.promconfig import deploy_dir

# A constant fallback ("... or vector(0)") returns a series whatever the metric does: checked with it,
# a panel whose metric is missing or misspelt would pass. The check strips it first.
FALLBACK = re.compile(r"\s*\bor\s+(?:on\s*\(\s*\)\s*)?vector\s*\(\s*[0-9.]+\s*\)")

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
        out = FALLBACK.sub("", self.expr)
        for name, value in GRAFANA_VARIABLES.items():
            out = out.replace(name, value)
        return out


@dataclass(frozen=True, slots=True)
class QueryResult:
    query: PanelQuery
    series: int  # series returned, constant fallbacks stripped
    error: str | None = None
    nonzero: int = 0  # series whose value is finite and not zero (NaN and a flat 0 prove no traffic)


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
    result = body.get("data", {}).get("result", [])
    return QueryResult(query, len(result), nonzero=sum(1 for series in result if _live(series)))


def _live(series: dict[str, Any]) -> bool:
    try:
        value = float(series["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return math.isfinite(value) and value != 0.0


# PromQL words that look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)


def metric_names(promql: str) -> set[str]:
    """The metric names a query reads (functions, label names, keywords and durations left out), so a
    rule can be held against what Prometheus actually scrapes: a misspelt name is never an error in
    PromQL, only an alert that can never fire."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', promql)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![0-9.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names
