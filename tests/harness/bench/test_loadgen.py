"""The open-loop generator against real local servers (trivial endpoint, scripted aiohttp stubs)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from barcode_harness.bench import loadgen, loadgen_cli
from barcode_harness.bench.httpclient import pace
from barcode_harness.bench.loadgen import (
    LoadSpec,
    run_load,
    schedule_count,
    scheduled_offset,
)
from barcode_harness.bench.loadgen_cli import calibrate, find_ceiling
from barcode_harness.bench.procstats import busy_share
from barcode_harness.bench.procstats import machine_ticks as cpu_times
from barcode_harness.bench.trivial_server import TrivialServerProcess, answer
from barcode_pipeline.domain.validation import ScanRules, parse_scan
from barcode_pipeline.errors import ConfigError, PipelineError
from tests.harness.scanner.stub_ingest import StubIngest, accept_all, free_port

Answer = tuple[int, Any, dict[str, str]]


# --------------------------------------------------------------------------- pure schedule
@pytest.mark.parametrize(
    ("rate", "duration", "total"), [(1000, 1, 1000), (3, 1, 3), (10, 0.25, 3), (7.5, 2, 15)]
)
def test_schedule_covers_the_duration_exactly(rate: float, duration: float, total: int) -> None:
    assert schedule_count(rate, duration) == total
    for processes in (2, 3, 4):
        counts = [schedule_count(rate, duration, processes, i) for i in range(processes)]
        assert sum(counts) == total


def test_workers_interleave_into_one_evenly_spaced_schedule() -> None:
    rate, duration, processes = 100.0, 1.0, 3
    offsets = sorted(
        scheduled_offset(k, rate, processes, i)
        for i in range(processes)
        for k in range(schedule_count(rate, duration, processes, i))
    )
    assert offsets == [pytest.approx(j / rate) for j in range(100)]


def test_pacer_never_fires_early_and_fires_everything() -> None:
    due = [time.monotonic() + 0.02 + j / 2000 for j in range(200)]  # 2,000/s for 0.1 s
    fired: list[tuple[float, float]] = []
    state = {"k": 0}

    def fire(now: float) -> float | None:
        while state["k"] < len(due) and due[state["k"]] <= now:
            fired.append((due[state["k"]], now))
            state["k"] += 1
        return due[state["k"]] if state["k"] < len(due) else None

    asyncio.run(pace(fire, due[0]))
    assert len(fired) == 200
    assert all(now >= t for t, now in fired)


def test_trivial_endpoint_answers_like_the_ingest_api() -> None:
    status, body = answer(b"POST", b"/ingest/barcode", b'{"scanId":"a1"}')
    assert (status, body) == (202, b'{"scanId":"a1","status":"accepted"}')
    status, body = answer(b"POST", b"/ingest/barcodes", b"[{},{}]")
    assert (status, body) == (200, b'{"total":2,"succeeded":2,"failedIndices":[]}')
    assert answer(b"POST", b"/ingest/barcode", b"{")[0] == 400
    assert answer(b"GET", b"/ingest/barcode", b"")[0] == 405
    assert answer(b"GET", b"/health", b"")[0] == 200
    assert answer(b"GET", b"/nope", b"")[0] == 404


def test_spec_validation() -> None:
    with pytest.raises(ConfigError):
        LoadSpec(url="http://x", rate=0, duration_s=1)
    with pytest.raises(ConfigError):
        LoadSpec(url="http://x", rate=1, duration_s=1, processes=4, concurrency_limit=2)
    with pytest.raises(ConfigError):
        run_load(LoadSpec(url="https://127.0.0.1:1", rate=1, duration_s=0.1))


# --------------------------------------------------------------------------- against real servers
def test_single_mode_against_the_trivial_endpoint_records_every_ack(tmp_path: Path) -> None:
    ids_path = tmp_path / "acked.txt"
    with TrivialServerProcess() as server:
        result = run_load(LoadSpec(url=server.url, rate=500, duration_s=1.0, acked_ids_path=ids_path))
    assert result.scheduled == result.sent == result.responses == result.ok == 500
    assert result.errors == 0 and result.status_counts == {"202": 500}
    assert result.scans_acked == result.scans_acked_unique == 500
    ids = ids_path.read_text().split()
    assert len(ids) == len(set(ids)) == 500
    # no latency thresholds here: on a loaded CI machine they measure the machine, not the generator
    assert result.latency.count == result.service_time.count == 500 and result.latency.p50_ms > 0
    assert result.service_time.p99_ms <= result.latency.max_ms
    assert result.dispatch_lag.count == 500  # the pacer's lateness is reported for every request
    assert [p.count for p in result.timeseries] == [500]
    # answers / max(duration, elapsed): at most the offered rate, and far from zero even if the run stalls
    assert 0.5 * 500 <= result.achieved_rps <= 500 * 1.001
    as_json = result.to_dict()
    assert as_json["latency_ms"]["p99_ms"] == result.latency.p99_ms and as_json["hdr"]["latency_us"]


def test_bodies_are_valid_scans_and_batches(tmp_path: Path) -> None:
    seen: list[Any] = []

    def record(path: str, body: Any, n: int) -> Answer:
        seen.append(body)
        return accept_all(path, body, n)

    with StubIngest(record) as stub:
        result = run_load(LoadSpec(url=stub.url, rate=40, duration_s=0.25, mode="batch", batch_size=25))
    assert result.ok == 10 and result.scans_sent == result.scans_acked == 250
    rules = ScanRules()
    scans = [parse_scan(item, rules) for batch in seen for item in batch]
    assert len({s.scan_id for s in scans}) == len({s.barcode for s in scans}) == 250


def test_duplicates_are_counted_once_as_unique_acks() -> None:
    with TrivialServerProcess() as server:
        result = run_load(LoadSpec(url=server.url, rate=400, duration_s=0.5, duplicate_ratio=0.3))
    assert result.scans_acked == 200
    assert 100 < result.scans_acked_unique < 180


def test_two_processes_merge_into_one_result(tmp_path: Path) -> None:
    ids_path = tmp_path / "acked.txt"
    with TrivialServerProcess() as server:
        result = run_load(
            LoadSpec(url=server.url, rate=600, duration_s=1.0, processes=2, acked_ids_path=ids_path)
        )
    assert result.scheduled == result.ok == 600
    assert len(result.client_cpu) == 2
    ids = ids_path.read_text().split()
    assert len(ids) == len(set(ids)) == 600
    assert not list(tmp_path.glob("*.part*"))
    assert result.timeseries[0].count == 600


def test_aiohttp_client_gives_the_same_counts() -> None:
    with TrivialServerProcess() as server:
        result = run_load(LoadSpec(url=server.url, rate=300, duration_s=0.5, client="aiohttp"))
    assert result.ok == 150 and result.errors == 0


def test_error_statuses_and_partial_batches_are_counted() -> None:
    def mixed(path: str, body: Any, n: int) -> Answer:
        if path.endswith("/barcodes"):
            return 207, {"total": len(body), "succeeded": len(body) - 2, "failedIndices": [0, 1]}, {}
        if n % 4 == 0:
            return 503, {"detail": "busy"}, {"Retry-After": "1"}
        return accept_all(path, body, n)

    with StubIngest(mixed) as stub:
        single = run_load(LoadSpec(url=stub.url, rate=200, duration_s=0.5))
        batch = run_load(LoadSpec(url=stub.url, rate=20, duration_s=0.5, mode="batch", batch_size=10))
    assert single.status_counts == {"202": 75, "503": 25}
    assert single.errors == 25 and single.ok == 75 and single.scans_acked == 75
    assert single.error_rate == pytest.approx(0.25)
    assert sum(p.errors for p in single.timeseries) == 25
    assert batch.status_counts == {"207": 10} and batch.scans_sent == 100 and batch.scans_acked == 80


def test_connection_errors_and_timeouts_are_counted_not_hidden() -> None:
    refused = run_load(LoadSpec(url=f"http://127.0.0.1:{free_port()}", rate=100, duration_s=0.3))
    assert refused.status_counts == {"connect_error": 30} and refused.ok == 0 and refused.errors == 30

    with StubIngest(delay_s=3.0) as stub:
        slow = run_load(LoadSpec(url=stub.url, rate=20, duration_s=0.25, timeout_s=0.3))
    assert slow.status_counts == {"timeout": 5} and slow.failures == 5


def test_open_loop_charges_queueing_to_the_server_no_coordinated_omission() -> None:
    """2 connections to a 100 ms server at 50 req/s: capacity is 20/s, so requests queue.

    A closed-loop client would report ~100 ms; measured from the schedule, latency keeps growing.
    """
    with StubIngest(delay_s=0.1) as stub:
        result = run_load(LoadSpec(url=stub.url, rate=50, duration_s=0.5, concurrency_limit=2))
    assert result.ok == 25
    # the server's 100 ms is a floor; a loaded machine only adds to it (the bound is generous on purpose)
    assert 100 <= result.service_time.p50_ms < 300
    assert result.latency.max_ms > 500  # the last request waited for the 24 before it
    assert result.latency.p50_ms > 2 * result.service_time.p50_ms


def test_calibrate_runs_the_load_against_the_trivial_endpoint() -> None:
    calibration = calibrate(LoadSpec(url="http://unused", rate=200, duration_s=0.5))
    assert calibration.ok == 100 and calibration.spec.url != "http://unused"


class _FakeLoad:
    """Stands in for :func:`run_load` so the search is tested without timing: ``capacity`` is sustained."""

    def __init__(self, capacity: float) -> None:
        self.capacity = capacity
        self.specs: list[LoadSpec] = []
        self.p99_limits: list[float] = []

    def __call__(self, spec: LoadSpec) -> _FakeLoad.Result:
        self.specs.append(spec)
        return _FakeLoad.Result(self, spec)

    class Result:
        def __init__(self, load: _FakeLoad, spec: LoadSpec) -> None:
            self.load, self.spec = load, spec

        def sustained(self, max_p99_ms: float = 50.0, max_error_rate: float = 0.0) -> bool:
            del max_error_rate
            self.load.p99_limits.append(max_p99_ms)
            return self.spec.rate <= self.load.capacity


def test_find_ceiling_grows_then_bisects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    template = LoadSpec(url="http://sut:1", rate=1, duration_s=0.3, acked_ids_path=tmp_path / "ids.txt")

    # grows by `growth` while sustained, and never past max_rate
    fake = _FakeLoad(capacity=10_000)
    monkeypatch.setattr(loadgen_cli, "run_load", fake)
    best, steps = find_ceiling(template, start_rate=100, growth=2, max_rate=400, max_p99_ms=1000)
    assert [s.rate for s in steps] == [100, 200, 400]
    assert all(s.sustained for s in steps) and best == 400
    assert fake.p99_limits == [1000] * 3  # the caller's latency bound is the one applied
    # each step runs the template at the step's rate; acked IDs are never written by a search
    assert all(s.url == template.url and s.duration_s == template.duration_s for s in fake.specs)
    assert all(s.acked_ids_path is None for s in fake.specs)

    # the first failure stops the growth, then bisection narrows (good, bad) step by step
    fake = _FakeLoad(capacity=700)
    monkeypatch.setattr(loadgen_cli, "run_load", fake)
    seen: list[float] = []
    best, steps = find_ceiling(
        template,
        start_rate=100,
        growth=2,
        max_rate=10_000,
        refine_steps=3,
        max_p99_ms=20,
        on_step=lambda step: seen.append(step.rate),
    )
    assert [(s.rate, s.sustained) for s in steps] == [
        (100, True),
        (200, True),
        (400, True),
        (800, False),  # grown past the capacity: bisect between 400 and 800
        (600, True),
        (700, True),
        (750, False),
    ]
    assert best == 700 and seen == [s.rate for s in steps]
    assert [s.rate for s in fake.specs] == seen

    # nothing sustained at all: the ceiling is 0
    monkeypatch.setattr(loadgen_cli, "run_load", _FakeLoad(capacity=0))
    best, steps = find_ceiling(template, start_rate=100, refine_steps=2, max_rate=1000)
    assert best == 0 and not any(s.sustained for s in steps)


def test_machine_cpu_share_from_proc_stat_samples() -> None:
    assert busy_share((10, 100), (60, 200)) == pytest.approx(0.5)
    assert busy_share(None, (1, 2)) is None
    assert busy_share((5, 100), (5, 100)) is None
    sample = cpu_times()
    if sample is not None:  # Linux
        assert 0 <= sample[0] <= sample[1]


def test_module_cli_run_writes_json_and_acked_ids(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from barcode_harness.bench.loadgen_cli import app

    out, ids = tmp_path / "r.json", tmp_path / "ids.txt"
    with TrivialServerProcess() as server:
        args = [
            "run",
            server.url,
            "--rate",
            "100",
            "--duration",
            "0.3",
            "--json",
            str(out),
            "--acked-ids",
            str(ids),
        ]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = orjson.loads(out.read_bytes())
    assert data["ok"] == 30 and data["machine"]["cores"] and data["latency_ms"]["count"] == 30
    assert len(ids.read_text().split()) == 30


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_the_api_key_is_sent_with_every_request_and_never_written_out(client: str) -> None:
    with StubIngest() as stub:
        spec = LoadSpec(url=stub.url, rate=100, duration_s=0.2, client=client, api_key="bpk_test")
        result = run_load(spec)
    assert result.ok > 0 and stub.authorization == {"Bearer bpk_test": result.sent}
    assert "bpk_test" not in orjson.dumps(spec.to_dict()).decode()


def no_bodies(spec: LoadSpec, index: int, processes: int, token: str) -> Any:
    """A body factory that fails in the second worker process only, before the start barrier."""
    if index == 1:
        raise RuntimeError("no bodies here")
    return loadgen.ScanBodies(spec, index, processes, token)


@pytest.mark.parametrize("factory", [no_bodies, lambda *_: None], ids=["fails-in-a-worker", "unpicklable"])
def test_a_worker_that_cannot_start_fails_the_load_at_once_with_its_cause(factory: Any) -> None:
    spec = LoadSpec(url="http://127.0.0.1:9", rate=10, duration_s=1, processes=2, body_factory=factory)
    started = time.monotonic()
    with pytest.raises(PipelineError, match=r"failed to start: .*(no bodies here|pickle)"):
        run_load(spec)
    assert time.monotonic() - started < 60, "the start barrier waited out its timeout"
