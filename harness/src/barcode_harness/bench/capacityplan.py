"""The capacity plan in ``docs/capacity.md``: ``barcode-pipeline capacity`` at three rates (``bench plan``).

Fixed bounds (4 GiB of Redis, as the stacks set maxmemory; a 1 TiB disk per store), so the section reads
the same on every machine and a test can hold it to the code.
"""

from __future__ import annotations

from pathlib import Path

from barcode_harness import sections
from barcode_harness.bench.docs import markers
from barcode_harness.settings import HarnessSettings
from barcode_pipeline.ops import capacity

SECTION = markers("plan")
RATES = (100.0, 1000.0, 5000.0)
CPU_RATES = (1000.0, 5000.0, 20000.0)
HOST_CORES = 8
REFERENCE = capacity.Bounds(
    redis_memory=4 * capacity.GIB, redis_disk=1024 * capacity.GIB, kafka_disk=1024 * capacity.GIB,
    db_disk=1024 * capacity.GIB,
)  # fmt: skip
COMMAND = "barcode-pipeline capacity --rate 100 --rate 1000 --rate 5000 --redis-memory 4 --disk 1024"


def section(settings: HarnessSettings) -> str:
    """The plan at each of ``RATES`` with the default settings, between the section's markers."""
    plans = {rate: capacity.plan(settings, rate, REFERENCE) for rate in RATES}
    ha = settings.updated({"topic_replication": 3})
    cpu = {rate: capacity.cpu_plan(ha, rate, host_cores=HOST_CORES) for rate in CPU_RATES}
    return "\n".join([
        SECTION[0],
        "## The plan at 100, 1,000 and 5,000 scans/s",
        "",
        f"`{COMMAND}` with the default settings: Redis bounded at 4 GiB (the stacks' maxmemory), a 1 TiB "
        "disk for each store (Kafka's for all replicas together), every scan through the single-scan API "
        "(the batch API's records are a sixth the size). Bytes per scan are the measured constants in "
        "`ops/capacity.py` (`bench footprint`, checked by `bench soak` below). Run `capacity` with your own "
        "bounds (`--redis-memory`, `--disk`, `--db-disk`, ...); it prints the settings each store needs.",
        "",
        capacity.markdown(plans),
        "### CPU: the cores each tier needs",
        "",
        f"`barcode-pipeline capacity --rate 1000 --rate 5000 --rate 20000 --host-cores {HOST_CORES}` on the "
        "ha profile's layout (`BP_TOPIC_REPLICATION=3`), every scan single: the microseconds of CPU per scan "
        "each stage used in `bench max` (docs/benchmarks.md) at its step nearest 5,000 scans/s, times the "
        "rate, with 30 % of each core kept free. Measured on 2 cores with everything co-located: a "
        "starting point to check on the real hosts with `bench max`, not a promise.",
        "",
        capacity.cpu_markdown(cpu, HOST_CORES),
        SECTION[1],
    ]) + "\n"  # fmt: skip


def write_section(doc: Path, settings: HarnessSettings) -> Path:
    return sections.write(doc, section(settings), SECTION, "# Capacity")
