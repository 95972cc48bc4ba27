"""The harness's own scanner key: demo, bench and chaos create one per run, as an operator would."""

from __future__ import annotations

import logging

from barcode_harness.settings import HarnessSettings
from barcode_pipeline.auth.store import create_key
from barcode_pipeline.run.startup import prepare

log = logging.getLogger(__name__)


def with_harness_key(settings: HarnessSettings, name: str, *, start_stack: bool = True) -> HarnessSettings:
    """``settings`` whose ``ingest_api_key`` is a fresh key ``harness-<name>`` for every device (none
    with auth off), replacing an earlier run's; no rate limit: one key stands for many centres."""
    if settings.auth.mode == "off":
        return settings
    prepare(settings, start_stack=start_stack)
    secret = create_key(settings.db.url, f"harness-{name}", "*", rate=0, replace=True)
    log.info("created scanner key harness-%s for the harness's clients", name)
    return settings.updated({"ingest_api_key": secret})
