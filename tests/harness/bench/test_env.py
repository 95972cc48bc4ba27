"""The bench's own Redis database: emptied per run, so earlier runs' markers cost later ones nothing."""

from __future__ import annotations

import uuid

import pytest
import redis

from barcode_harness.bench.env import BENCH_REDIS_DB, bench_settings, reset_redis
from barcode_pipeline.adapters.redis import database_of
from barcode_pipeline.config import Settings

TEST_REDIS_DB = 15  # this module's own database


pytestmark = pytest.mark.integration


def test_bench_settings_point_at_the_bench_databases(stack_settings: Settings) -> None:
    s = bench_settings(stack_settings, "bp_bench_x", fresh=True, redis_db=BENCH_REDIS_DB)
    assert s.db.url.endswith("/bp_bench_x") and database_of(s.redis.url) == BENCH_REDIS_DB
    assert bench_settings(stack_settings, None, fresh=True).redis.url == stack_settings.redis.url


def test_reset_redis_empties_the_bench_database_but_never_database_0(stack_settings: Settings) -> None:
    key = f"bench-test:{uuid.uuid4().hex}"
    bench = bench_settings(stack_settings, None, fresh=True, redis_db=TEST_REDIS_DB)
    own = redis.Redis.from_url(bench.redis.url)
    zero = redis.Redis.from_url(bench_settings(stack_settings, None, fresh=True, redis_db=0).redis.url)
    try:
        own.set(key, "1")
        zero.set(key, "1", ex=60)
        reset_redis(bench)
        assert own.dbsize() == 0
        reset_redis(bench_settings(stack_settings, None, fresh=True, redis_db=0))
        assert zero.get(key) == b"1"
    finally:
        zero.delete(key)
        own.close()
        zero.close()
