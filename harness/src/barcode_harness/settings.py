"""The harness's settings: the product's, and the knobs only the harness reads (the local stack's
servers, the key its clients send), which ``run`` never reads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from barcode_pipeline.config import SECRET_FILE_SETTINGS, Settings, flat, load_settings_as


class HarnessSettings(Settings):
    # --- the local stack's servers ---
    cache_dir: Path = Path.home() / ".cache" / "barcode-pipeline"  # downloaded Kafka distributions
    kafka_version: str = "4.1.2"
    kafka_controller_port: int = 9093
    kafka_heap: str = "512m"
    redis_appendfsync: Literal["everysec", "always", "no"] = "everysec"
    # Topology of `stack up`: one node each, or the replicated `ha` profile (stack/ha.py).
    stack_profile: Literal["single", "ha"] = "single"
    # `stack up --secure`: TLS and per-role users on every server (stack/secure.py); recorded in the
    # state dir, so a secured stack is never started plaintext by mistake.
    stack_secure: bool = False
    ha_subnet: str = "10.77.10.0/24"  # the ha profile's bridge; every node gets an address in it
    ha_kafka_heap: str = "384m"
    prometheus_retention: str = "7d"  # `stack up --monitoring`
    # --- the harness's clients ---
    # The key the scanner simulator and the load generators send; "" sends none.
    ingest_api_key: str = ""


HARNESS_SECRET_FILES = (*SECRET_FILE_SETTINGS, "ingest_api_key")


def load_harness_settings(**overrides: object) -> HarnessSettings:
    """The environment (``BP_*`` and ``BP_*_FILE``) as the harness reads it; explicit overrides win."""
    return load_settings_as(HarnessSettings, overrides, HARNESS_SECRET_FILES)


def harness_settings(settings: Settings) -> HarnessSettings:
    """``settings`` (as the product resolved them, e.g. in ``run``) with the harness's own knobs from
    the environment: what the local-stack starter is handed is the product's class."""
    if isinstance(settings, HarnessSettings):
        return settings
    return load_harness_settings(**flat(settings))
