"""Each bench command's spec (every knob, at the full run's values), its quick preset, and which knobs
are options: ``bench/commands.py`` builds the options and their help's defaults from here, so they
cannot drift from what runs. Standard library only: the CLI reads this module at every start."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Any

PATH_CHOICES = ("legacy-single", "legacy-batch", "async-single", "async-batch")
TABLE_SIZE_PATH = "async-batch"  # the path whose maximum table-size compares


@dataclass(frozen=True)
class Option:
    """A spec field that is a command-line option (``--<flag>``; a list when the field is a tuple).
    A true-by-default flag is offered as ``--no-<flag>``."""

    help: str
    flag: str = ""  # default: the field's name without a unit suffix (_s, _ms), dashed
    min: float | None = None
    shown: str | None = None  # the default as the help shows it, when the value says too little ("": not)


def opt(default: Any, help: str, **option: Any) -> Any:
    """A spec field offered as an option (``option``: the other fields of :class:`Option`)."""
    return dataclasses.field(default=default, metadata={"option": Option(help, **option)})


@dataclass(frozen=True)
class Spec:
    preset: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CompareSpec(Spec):
    rate: float = opt(100.0, "Scans/s (single-scan requests/s) per path", min=0.1)
    concurrency: int = opt(10, "Requests in flight per path", min=1)
    duration_s: float = opt(60.0, "Seconds per phase", min=1)
    rounds: int = opt(2, "Rounds (odd: legacy first, even: async first)", min=1)
    high_rate: float = opt(1000.0, "Rate of the high-load comparison", min=1)
    high_duration_s: float = opt(30.0, "Seconds per path at the high rate; 0 skips", min=0)
    high_concurrency: int = 512
    sweep_delays_ms: tuple[int, ...] = opt((0, 50, 200, 1000), "worker_max_delay_ms values to sweep",
                                           flag="sweep-delay")  # fmt: skip
    sweep_duration_s: float = opt(30.0, "Seconds per sweep setting; 0 skips", min=0)
    sweep_rate: float | None = opt(None, "Rate of the sweep", min=0.1, shown="= --rate")
    kafka_probe: bool = opt(True, "Skip the bare Kafka produce")
    kafka_probe_s: float | None = None  # default: the high-rate duration, at least 3 s
    commit_probe: int = 300  # single-row commits timed to show the legacy path's per-scan cost
    idle_s: float = 5.0  # background DB writes with no load, for context
    settle_s: float = 1.0  # pause before each phase
    warmup_s: float = 5.0  # unmeasured load before each block (cold processes, new workers)
    drain_timeout_s: float = 180.0


COMPARE_QUICK = CompareSpec(
    duration_s=8.0, high_duration_s=6.0, sweep_duration_s=5.0, idle_s=2.0, warmup_s=2.0, preset="quick"
)


@dataclass(frozen=True)
class IsolationSpec(Spec):
    rate: float = opt(100.0, "Scans/s on each path", min=0.1)
    concurrency: int = opt(10, "Requests in flight per path", min=1)
    baseline_s: float = opt(20.0, "Seconds before contention", min=1)
    contention_s: float = opt(40.0, "Seconds of DB contention", min=1)
    recovery_s: float = opt(40.0, "Seconds after contention", min=1)
    lockers: int = opt(4, "Threads holding row locks", min=1)
    hold_s: float = opt(2.0, "Seconds each lock transaction holds", min=0.01)
    lock_rows: int = 100
    timeout_s: float = 10.0  # the clients' request timeout
    warmup_s: float = 5.0
    drain_timeout_s: float = 300.0

    def durations(self) -> dict[str, float]:
        return {"baseline": self.baseline_s, "contention": self.contention_s, "recovery": self.recovery_s}


ISOLATION_QUICK = IsolationSpec(
    baseline_s=5.0, contention_s=15.0, recovery_s=12.0, warmup_s=2.0, preset="quick"
)


@dataclass(frozen=True)
class MaxSpec(Spec):
    paths: tuple[str, ...] = opt(PATH_CHOICES, "Paths to search (all by default): " + " ".join(PATH_CHOICES),
                                 flag="path", shown="")  # fmt: skip
    step_s: float = opt(15.0, "Seconds per rate step", min=1)
    batch_size: int = opt(100, "Scans per batch request", min=1)
    start_single: float = 250.0  # scans/s
    start_batch: float = 2000.0  # scans/s
    growth: float = 1.6
    refine_steps: int = 2
    max_rate: float = 200_000.0
    max_steps: int = 14  # per path, a safety bound
    max_error_rate: float = opt(0.001, "Sustained: errors below", min=0)
    max_p99_ms: float = opt(250.0, "Sustained: client p99 at most (ms)", flag="max-p99", min=1)
    backlog_allow_s: float = 2.0
    drain_limit_s: float = 10.0
    concurrency: int = 512
    warmup_s: float = 3.0
    kafka_latency_rate: float = 1000.0
    kafka_probe_s: float = 10.0
    insert_rows: int = opt(200_000, "Rows for the bare INSERT ceiling", min=500)
    cleanup_drain_s: float = 300.0


MAX_QUICK = MaxSpec(
    step_s=4.0, refine_steps=1, warmup_s=1.0, kafka_probe_s=3.0, insert_rows=50_000, preset="quick"
)


@dataclass(frozen=True)
class VegetaSpec(Spec):
    rates: tuple[float, ...] = opt(
        (100.0, 1000.0, 2000.0, 3000.0), "Request rates to run", flag="rate", min=1
    )
    duration_s: float = opt(20.0, "Seconds per rate", min=1)
    # Rounds until the p99 stops falling: a fresh broker JIT-compiles its request path for about a
    # minute of load (2,000 req/s p99: 156 -> 65 -> 5.6 ms), a fixed 60 s was too short on a slow host.
    warmup_s: float = opt(180.0, "Most seconds of warm-up at the highest rate, reported apart", min=0)
    warmup_round_s: float = 10.0
    timeout_s: float = 10.0
    floor_s: float = 10.0  # per rate, for the trivial endpoint and for the bare produce round trip
    preset: str = "full"


VEGETA_QUICK = VegetaSpec(
    rates=(100.0, 1000.0), duration_s=5.0, warmup_s=2.0, warmup_round_s=2.0, floor_s=3.0, preset="quick"
)


@dataclass(frozen=True)
class ReplicationSpec(Spec):
    rate: float = opt(200.0, "Single scans/s of the latency phase", min=1)
    duration_s: float = opt(30.0, "Seconds of the latency phase", min=1)
    kafka_rate: float = 1000.0  # messages/s of the bare produce probe
    kafka_s: float = 10.0
    step_s: float = opt(10.0, "Seconds per maximum-rate step", min=1)
    start_batch: float = 1000.0  # scans/s of the search's first step
    rounds: int = opt(2, "Rounds, each measuring both profiles (figures: the median)", min=1)


REPLICATION_QUICK = ReplicationSpec(duration_s=8.0, kafka_s=3.0, step_s=4.0, rounds=1, preset="quick")


@dataclass(frozen=True)
class TableSizeSpec(Spec):
    rows: int = opt(50_000_000, "Rows the fill puts in barcodes", min=1)
    days: float = opt(30.0, "Their scan times over the last this many days", min=0.01)
    search: MaxSpec = dataclasses.field(default_factory=lambda: MaxSpec(paths=(TABLE_SIZE_PATH,)))


TABLE_SIZE_QUICK = TableSizeSpec(
    rows=100_000, days=2.0, search=dataclasses.replace(MAX_QUICK, paths=(TABLE_SIZE_PATH,)), preset="quick"
)


@dataclass(frozen=True)
class FootprintSpec(Spec):
    scans: int = opt(200_000, "Scans through the publish path, per rate", min=1000)
    rates: tuple[float, ...] = opt((100.0, 1000.0, 5000.0), "Scans/s whose scan times the markers see",
                                   flag="rate", min=1)  # fmt: skip
    dead_letters: int = 20_000
    kafka_single: int = 10_000
    kafka_batched: int = 100_000
    table_rows: int = opt(1_000_000, "Rows of the table measurement and migration timing", min=1000)


FOOTPRINT_QUICK = FootprintSpec(scans=20_000, rates=(1000.0,), dead_letters=2_000, kafka_single=2_000,
                                kafka_batched=20_000, table_rows=20_000, preset="quick")  # fmt: skip


@dataclass(frozen=True)
class SoakSpec(Spec):
    rate: float = opt(1000.0, "Scans/s, all APIs together", min=1)
    duration_s: float = opt(3600.0, "Seconds of load", min=10)
    # the streams' retention fills, caches warm; slopes are fitted after it
    warmup_s: float = opt(300.0, "Seconds before the slopes are fitted", min=0)
    sample_s: float = opt(30.0, "Seconds between samples", min=1)
    batch_share: float = 0.2  # of the scans, sent through the batch API
    batch_max: int = 100
    resend_ratio: float = 0.03  # scans a client sends again, as a new request


SOAK_QUICK = SoakSpec(rate=300.0, duration_s=40.0, warmup_s=8.0, sample_s=4.0, preset="quick")


@dataclass(frozen=True)
class HostileSpec(Spec):
    rate: float = opt(500.0, "Keyed scans/s, one per request", min=1)
    duration_s: float = opt(30.0, "Seconds per phase: alone, then under attack", min=1)
    slow_connections: int = opt(2000, "Connections that never finish their headers", flag="slow", min=0)
    header_streams: int = 4
    header_stream_bytes: int = 100 * 2**20
    invalid_key_rate: float = opt(1000.0, "Requests/s with random invalid keys", flag="invalid-rate", min=1)
    ramp_s: float = 5.0  # the attack runs this long before the keyed load starts again
    warmup_s: float = 180.0  # at most; rounds of the keyed load until its p99 stops falling
    warmup_round_s: float = 10.0


HOSTILE_QUICK = HostileSpec(duration_s=8.0, slow_connections=300, header_streams=2,
                            header_stream_bytes=4 * 2**20, invalid_key_rate=200.0, ramp_s=2.0, warmup_s=2.0,
                            warmup_round_s=2.0, preset="quick")  # fmt: skip


@dataclass(frozen=True)
class AuthBenchSpec(Spec):
    rate: float = opt(500.0, "Requests/s", min=1)
    duration_s: float = opt(10.0, "Seconds per round and mode", min=1)
    rounds: int = opt(3, "Rounds, each with auth off and on", min=1)
    warmup_s: float = 2.0
    calls: int = 200_000  # in-process timing


AUTH_QUICK = AuthBenchSpec(duration_s=4, rounds=2, preset="quick")


@dataclass(frozen=True)
class LingerSpec(Spec):
    rate: float = opt(1000.0, "Scans/s, paced, one produce() each", min=1)
    lingers_ms: tuple[float, ...] = opt((0.0, 2.0, 5.0, 10.0, 20.0), "linger.ms values to measure",
                                        flag="linger", min=0)  # fmt: skip
    duration_s: float = opt(15.0, "Seconds per measurement", min=1)
    rounds: int = opt(2, "Rounds through every layout and linger (the median is reported)", min=1)
    devices: int = opt(300, "Device IDs the scans are keyed by", min=1)
    warmup_s: float = 3.0  # unmeasured, per measurement: a new producer's connections and metadata


LINGER_QUICK = LingerSpec(lingers_ms=(0.0, 5.0), duration_s=3.0, rounds=1, warmup_s=1.0, preset="quick")
