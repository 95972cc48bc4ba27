"""The Prometheus configuration: scrape config rendered from settings, rules from ``deploy/prometheus``.

``deploy/prometheus/`` is the source of truth (users copy it into their own Prometheus). The local
Prometheus of ``stack up --monitoring`` gets the same rules, with the freshness SLO from settings,
and a scrape config whose targets are this machine's ports. Prometheus reads YAML, and JSON is
YAML, so the rendered files are written as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from barcode_pipeline.config import Settings
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.monitoring.targets import Target, exporter_targets, pipeline_targets

RULE_FILES = ("recording.yml", "alerts.yml")
FRESHNESS_ALERT = "BarcodeFreshnessOverSLO"
FRESHNESS_EXPR = "bp:worker_freshness_seconds:p99_5m > {slo}"


def deploy_dir() -> Path:
    """``deploy/`` of the repository (editable install) or its copy inside the wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "deploy", here.parents[3] / "deploy"):
        if (candidate / "prometheus").is_dir():
            return candidate
    raise ConfigError("deploy/prometheus not found next to the package; reinstall barcode-pipeline")


def scrape_configs(targets: list[Target], interval_s: float) -> list[dict[str, Any]]:
    """One job per kind of service; the ``service`` label names the process (worker-1, ...)."""
    jobs: dict[str, list[Target]] = {}
    for target in targets:
        jobs.setdefault(target.job, []).append(target)
    return [
        {
            "job_name": job,
            "scrape_interval": f"{interval_s:g}s",
            "static_configs": [{"targets": [t.address], "labels": {"service": t.name}} for t in members],
        }
        for job, members in jobs.items()
    ]


def render_config(settings: Settings, rule_dir: Path) -> str:
    """``prometheus.yml`` for the local stack."""
    interval = settings.monitoring.prometheus_scrape_interval_s
    config = {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s"},
        "rule_files": [str(rule_dir / name) for name in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{settings.monitoring.prometheus_port}"]}],
            },
            *scrape_configs(pipeline_targets(settings) + exporter_targets(settings), interval),
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def render_rules(name: str, settings: Settings) -> str:
    """A rule file of ``deploy/prometheus/rules`` with the settings applied (the freshness SLO)."""
    data: Any = yaml.safe_load((deploy_dir() / "prometheus" / "rules" / name).read_text())
    for group in data.get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") == FRESHNESS_ALERT:
                rule["expr"] = FRESHNESS_EXPR.format(slo=f"{settings.monitoring.freshness_slo_s:g}")
    return json.dumps(data, indent=2) + "\n"


def write_all(settings: Settings, home: Path) -> Path:
    """Write the config and rules under ``home``; returns the config's path."""
    rule_dir = home / "rules"
    rule_dir.mkdir(parents=True, exist_ok=True)
    for name in RULE_FILES:
        (rule_dir / name).write_text(render_rules(name, settings))
    config = home / "prometheus.yml"
    config.write_text(render_config(settings, rule_dir))
    return config
