"""Fixtures of the authentication tests: the ingest tests' topic reader, shared."""

from __future__ import annotations

from tests.ingest.conftest import topic_reader

__all__ = ["topic_reader"]
