"""Fixtures of the web-layer tests: the legacy tests' migrated database, shared."""

from __future__ import annotations

from tests.legacy.conftest import legacy_db

__all__ = ["legacy_db"]
