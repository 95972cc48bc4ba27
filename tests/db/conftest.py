"""Fixtures for the migration tests: private databases on the stack's MariaDB, dropped afterwards.

The shared ``barcode`` database is never touched; concurrent suites use other database names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings
from barcode_pipeline.db import migrate


def query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = connect(url, autocommit=True, init_command="SET time_zone = '+00:00'")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())
    finally:
        conn.close()


@pytest.fixture
def new_database(stack_settings: Settings) -> Iterator[Callable[[], str]]:
    """Factory: the URL of a new, empty database ``bp_test_db_<random>``."""
    created: list[str] = []

    def factory() -> str:
        url = migrate.database_url(stack_settings.db.url, f"bp_test_db_{uuid.uuid4().hex[:8]}")
        migrate.create_database(url)
        created.append(url)
        return url

    yield factory
    for url in created:
        migrate.drop_database(url)


@pytest.fixture(scope="module")
def migrated_db(stack_settings: Settings) -> Iterator[str]:
    """One migrated database shared by the schema tests of a module."""
    url = migrate.database_url(stack_settings.db.url, f"bp_test_db_{uuid.uuid4().hex[:8]}")
    migrate.create_database(url)
    migrate.upgrade(url)
    yield url
    migrate.drop_database(url)
