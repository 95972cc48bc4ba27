"""What ``bench soak`` reads every interval: each store's size, each process group's memory,
descriptors, threads and CPU. Sizes come from the servers' own accounts (Redis ``used_memory``, the
Kafka topic's files, InnoDB's page counts): those are what fill a machine; entries miss every overhead."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from barcode_harness.bench import procstats
from barcode_harness.bench.footprint import table_bytes
from barcode_harness.bench.sampler import Sampler
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import redis as redis_adapter
from barcode_pipeline.adapters.db import connect

SUPERVISOR = "supervisor"  # the bench process itself: it supervises the services, as `run` would


@dataclass
class Sample:
    """One interval's reading; ``t`` is the wall clock."""

    t: float
    stores: dict[str, int]  # bytes (or entries, for the *_entries keys)
    groups: dict[str, procstats.Resources]
    cpu: dict[str, float]  # cores used since the previous sample

    def to_dict(self) -> dict[str, Any]:
        return {**vars(self), "groups": {k: vars(v) for k, v in self.groups.items()}}


def _redis(client: redis.Redis, streams: list[str]) -> dict[str, int]:
    info: Any = client.info("memory")
    persistence: Any = client.info("persistence")
    pending = 0
    stream_bytes = 0
    for stream in streams:
        stream_bytes += int(client.memory_usage(stream, samples=0) or 0)
        with contextlib.suppress(redis.ResponseError):  # no group yet
            pending += int(client.xpending(stream, names.WORKER_GROUP)["pending"])
    used = int(info["used_memory"])
    dlq = int(client.memory_usage(names.DLQ_STREAM, samples=0) or 0)
    return {
        "redis_used_bytes": used,
        "redis_markers_bytes": used - stream_bytes - dlq,  # and Redis's own overhead, which stays flat
        "redis_streams_bytes": stream_bytes,
        "redis_dlq_bytes": dlq,
        "redis_aof_bytes": int(persistence.get("aof_current_size", 0)),
        "redis_pending_entries": pending,
        "dlq_entries": int(client.xlen(names.DLQ_STREAM)),
        "redis_keys": int(client.dbsize()),
    }


def kafka_topic_bytes(data_dir: Path, topic: str) -> int:
    """Bytes of the topic's partition folders in one broker's log directory (all files)."""
    folders = [d for d in data_dir.glob(f"{topic}-*") if d.name.rsplit("-", 1)[-1].isdigit()]
    return sum(f.stat().st_size for d in folders for f in d.iterdir() if f.is_file())


class SoakSampler(Sampler[Sample]):
    """A :class:`Sample` every ``interval_s`` while entered; ``pids`` names the groups to follow."""

    def __init__(
        self,
        settings: HarnessSettings,
        kafka_dir: Path,
        pids: Callable[[], dict[str, list[int]]],
        interval_s: float,
    ) -> None:
        super().__init__(self._take, interval_s, join_s=60.0)
        self.settings, self.kafka_dir, self.pids = settings, kafka_dir, pids
        self._streams = names.all_streams(settings.streams.shards)
        self._cpu_before: procstats.CpuSnapshot | None = None

    def _take(self) -> Sample:
        """One reading, on fresh connections: a server restarted since the last one is read again."""
        cpu_now = procstats.snapshot(self.pids())
        # the first reading has no interval behind it: no CPU figures rather than zeros
        before, self._cpu_before = self._cpu_before, cpu_now
        cpu = procstats.cores_used(before, cpu_now) if before is not None else {}
        t = time.time()
        with (
            closing(redis_adapter.client(self.settings, timeout=5.0)) as client,
            closing(connect(self.settings.db.url, autocommit=True)) as conn,
        ):
            data, indexes, _ = table_bytes(conn)
            stores = {
                **_redis(client, self._streams),
                "kafka_bytes": kafka_topic_bytes(self.kafka_dir, names.TOPIC),
                "table_bytes": data + indexes,
            }
        groups = procstats.resources({**self.pids(), SUPERVISOR: [os.getpid()]}, alone=(SUPERVISOR,))
        return Sample(t, stores, groups, cpu)
