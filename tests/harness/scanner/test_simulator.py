"""The simulator against a real HTTP server: no scan is lost across outages, rejections and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from barcode_harness.scanner.outbox import State, outbox_status
from barcode_harness.scanner.simulator import Simulator, SimulatorConfig, SimulatorReport
from barcode_pipeline.cli import app
from barcode_pipeline.errors import ConfigError, PipelineError
from barcode_pipeline.names import ROUTE_BATCH as BATCH_PATH
from barcode_pipeline.names import ROUTE_SCAN as SINGLE_PATH
from tests.harness.scanner.stub_ingest import StubIngest, accept_all, free_port

Answer = tuple[int, Any, dict[str, str]]


def fast_config(url: str, outbox: Path, **overrides: Any) -> SimulatorConfig:
    """Short timers so outages and retries play out in well under a second."""
    base = SimulatorConfig(
        url=url,
        outbox_path=outbox,
        rate_per_device=500.0,
        count=60,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        relay_interval_s=0.02,
        drain_timeout_s=10.0,
        request_timeout_s=2.0,
        synchronous="NORMAL",
        seed=11,
    )
    return dataclasses.replace(base, **overrides)


def simulate(config: SimulatorConfig) -> SimulatorReport:
    return asyncio.run(asyncio.wait_for(Simulator(config).run(), 30))


def outbox_rows(path: Path) -> list[tuple[str, int, str | None, int]]:
    """(scan_id, state, last_error, attempts) of every row."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT scan_id, state, last_error, attempts FROM outbox ORDER BY seq").fetchall()


def assert_nothing_lost(path: Path, stub: StubIngest) -> None:
    """Every scan in the outbox is acked there, and the server acknowledged each of them."""
    rows = outbox_rows(path)
    assert rows
    assert all(state == State.ACKED for _, state, _, _ in rows)
    assert {sid for sid, *_ in rows} <= set(stub.accepted)


def test_single_mode_delivers_every_scan_including_resends(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"
    with StubIngest() as stub:
        report = simulate(fast_config(stub.url, box, count=90, duplicate_ratio=0.2))
    assert report.drained
    assert report.run.generated == 90 and report.run.acked == 90 and report.run.pending == 0
    assert report.outbox.total == 90 and report.outbox.acked == 90
    assert report.run.duplicates > 0
    assert sum(stub.accepted.values()) == 90
    assert len(stub.accepted) == 90 - report.run.duplicates  # resends carry the same scanId
    assert {body["deviceId"] for _, body, _ in stub.requests} == {
        "SEOUL-CENTER-PC-001",
        "SEOUL-CENTER-PC-002",
        "SEOUL-CENTER-PC-003",
    }
    assert_nothing_lost(box, stub)


def test_the_api_key_goes_with_every_request(tmp_path: Path) -> None:
    with StubIngest() as stub:
        report = simulate(fast_config(stub.url, tmp_path / "o.sqlite3", count=20, api_key="bpk_sim"))
        batches = simulate(
            fast_config(stub.url, tmp_path / "b.sqlite3", count=20, mode="batch", api_key="bpk_sim")
        )
    assert report.drained and batches.drained
    assert set(stub.authorization) == {"Bearer bpk_sim"}


def test_an_ingest_outage_loses_nothing(tmp_path: Path) -> None:
    """503 with Retry-After, 500, 429 and 408 for a while, then recovery: every scan ends up acknowledged."""
    outage_requests = 24  # the outage is counted in requests, not seconds: a slow start cannot skip it

    def flaky(path: str, body: Any, n: int) -> Answer:
        if n <= outage_requests:
            status = (503, 500, 429, 408)[n % 4]
            return status, {"detail": "kafka not confirming"}, {"Retry-After": "0"}
        return accept_all(path, body, n)

    box = tmp_path / "o.sqlite3"
    with StubIngest(flaky) as stub:
        report = simulate(fast_config(stub.url, box, count=120, rate_per_device=200.0))
    assert report.drained
    assert [status for _, _, status in stub.requests[:outage_requests]].count(503) == outage_requests // 4
    assert report.run.retried >= outage_requests  # every refused request was retried
    assert report.outbox.acked == 120 and report.outbox.rejected == 0
    # some scans needed several attempts: at least one extra per refused request
    assert report.outbox.attempts - report.outbox.sent >= outage_requests
    assert_nothing_lost(box, stub)


def test_connection_refused_then_restart_resumes_the_pending_scans(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"
    dead = f"http://127.0.0.1:{free_port()}"
    # the endpoint never answers, so it cannot drain; the second of slack only lets a slow start try
    first = simulate(fast_config(dead, box, count=30, drain_timeout_s=1.0))
    assert not first.drained
    assert first.outbox.pending == 30 and first.outbox.acked == 0
    assert first.run.retried > 0
    assert outbox_status(box).pending == 30

    with StubIngest() as stub:
        second = simulate(fast_config(stub.url, box, count=0))
    assert second.drained
    assert second.run.recovered == 30 and second.run.generated == 0
    assert second.outbox.acked == 30 and second.outbox.pending == 0
    assert set(stub.accepted) == {sid for sid, *_ in outbox_rows(box)}
    assert_nothing_lost(box, stub)


def test_a_backlog_is_caught_up_in_batches_and_new_scans_go_singly(tmp_path: Path) -> None:
    """After an outage the pending scans go through the batch endpoint; steady scans stay single."""
    box = tmp_path / "o.sqlite3"
    dead = f"http://127.0.0.1:{free_port()}"
    first = simulate(fast_config(dead, box, count=300, drain_timeout_s=1.0))
    assert first.outbox.pending == 300

    with StubIngest() as stub:
        second = simulate(fast_config(stub.url, box, count=0, concurrency=2, catch_up_batch=50))
    assert second.drained and second.outbox.acked == 300
    batches = [body for path, body, _ in stub.requests if path == BATCH_PATH]
    assert batches and all(1 < len(b) <= 50 for b in batches)
    assert len(stub.requests) < 300 // 2  # far fewer requests than scans
    assert_nothing_lost(box, stub)

    with StubIngest() as stub:
        steady = simulate(
            fast_config(stub.url, tmp_path / "s.sqlite3", count=30, rate_per_device=5.0, catch_up_batch=50)
        )
    assert steady.drained
    assert {path for path, _, _ in stub.requests} == {SINGLE_PATH}


def test_killed_simulator_resumes_from_its_outbox(tmp_path: Path) -> None:
    """SIGKILL mid-run (scans in flight and pending); a new run with the same outbox delivers them all."""
    box = tmp_path / "o.sqlite3"
    outage = {"on": False}

    def switchable(path: str, body: Any, n: int) -> Answer:
        if outage["on"]:
            return 503, {"detail": "down"}, {"Retry-After": "0"}
        return accept_all(path, body, n)

    with StubIngest(switchable) as stub:
        cmd = [
            sys.executable,
            "-c",
            "from barcode_pipeline.cli import main; main()",
            *_scanner(stub.url, box),
            *("--rate", "300", "--count", "20000", "--quiet"),
        ]
        env = {**os.environ, "BP_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(ConfigError):  # the file may exist before its table
                    if box.exists() and outbox_status(box).acked >= 100:
                        break
                time.sleep(0.05)
            outage["on"] = True  # now scans pile up as pending
            answered = len(stub.requests)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # until the outage bit and scans are pending
                refused = any(status == 503 for _, _, status in list(stub.requests)[answered:])
                if refused and outbox_status(box).pending > 0:
                    break
                time.sleep(0.05)
            before_kill = outbox_status(box)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert before_kill.acked >= 100
        assert before_kill.pending > 0
        outage["on"] = False
        report = simulate(fast_config(stub.url, box, count=0))
    assert report.drained
    assert report.run.recovered >= before_kill.pending
    assert report.outbox.pending == 0 and report.outbox.rejected == 0
    assert_nothing_lost(box, stub)


def test_permanent_4xx_is_rejected_once_and_kept_with_the_body(tmp_path: Path) -> None:
    def picky(path: str, body: Any, n: int) -> Answer:
        if body["deviceId"] == "UNKNOWN-PC":
            return 422, {"detail": {"field": "deviceId", "message": "unknown"}}, {}
        return accept_all(path, body, n)

    box = tmp_path / "o.sqlite3"
    with StubIngest(picky) as stub:
        report = simulate(fast_config(stub.url, box, count=20, devices=("SEOUL-CENTER-PC-001", "UNKNOWN-PC")))
    assert report.drained
    assert (report.outbox.acked, report.outbox.rejected, report.outbox.pending) == (10, 10, 0)
    bad = [body["scanId"] for _, body, status in stub.requests if status == 422]
    assert len(bad) == len(set(bad)) == 10  # each refused scan was sent once, never retried
    rows = outbox_rows(box)
    rejected = [(err, attempts) for _, state, err, attempts in rows if state == State.REJECTED]
    assert all(err is not None and '"deviceId"' in err and attempts == 1 for err, attempts in rejected)


def test_batch_mode_resends_only_the_failed_indices(tmp_path: Path) -> None:
    seen: set[str] = set()

    def partial(path: str, body: Any, n: int) -> Answer:
        assert path == "/ingest/barcodes"
        failed = [i for i, item in enumerate(body) if item["scanId"] not in seen and i % 2 == 1]
        seen.update(item["scanId"] for item in body)
        status = 207 if failed else 200
        return status, {"total": len(body), "succeeded": len(body) - len(failed), "failedIndices": failed}, {}

    box = tmp_path / "o.sqlite3"
    with StubIngest(partial) as stub:
        report = simulate(fast_config(stub.url, box, mode="batch", count=300, batch_size=50))
    assert report.drained
    assert report.outbox.acked == 300
    assert max(stub.batch_sizes) <= 50
    assert report.run.retried > 0
    assert sum(stub.accepted.values()) == 300  # the acknowledged items were never sent again
    assert_nothing_lost(box, stub)


def test_batch_time_trigger_sends_small_batches_at_low_rates(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"
    with StubIngest() as stub:
        report = simulate(
            fast_config(
                stub.url,
                box,
                mode="batch",
                count=None,
                duration_s=2.0,  # 8 intervals: even CPU stalls of a second leave several batches
                rate_per_device=20.0,
                batch_size=1000,
                batch_interval_s=0.25,
            )
        )
    assert report.drained and report.outbox.acked == 120
    # the size trigger (1000) never fires, so without the time trigger each device would send its 40
    # scans as one batch when generation ends; with it, batches leave as they go (about every 0.25 s,
    # but CPU stalls on a busy machine merge some, so only "several, each a small part" is asserted)
    per_device: dict[str, list[int]] = {}
    for _, body, _ in stub.requests:
        per_device.setdefault(body[0]["deviceId"], []).append(len(body))
    assert len(per_device) == 3
    for sizes in per_device.values():
        assert sum(sizes) == 40
        assert len(sizes) >= 3 and max(sizes) <= 30


def test_batch_4xx_naming_an_index_rejects_only_that_scan(tmp_path: Path) -> None:
    def no_cases(path: str, body: Any, n: int) -> Answer:
        for i, item in enumerate(body):
            if len(item["barcode"]) == 14:  # pretend ITF-14 case labels are not allowed
                return 422, {"detail": {"field": "barcode", "index": i}}, {}
        return accept_all(path, body, n)

    box = tmp_path / "o.sqlite3"
    with StubIngest(no_cases) as stub:
        report = simulate(fast_config(stub.url, box, mode="batch", count=120, batch_size=40))
    assert report.drained
    with sqlite3.connect(box) as conn:
        itf = conn.execute("SELECT COUNT(*) FROM outbox WHERE length(barcode) = 14").fetchone()[0]
        wrong = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE (length(barcode) = 14) != (state = 2)"
        ).fetchone()[0]
    assert itf > 0 and wrong == 0
    assert (report.outbox.rejected, report.outbox.acked) == (itf, 120 - itf)
    assert len(stub.accepted) == 120 - itf


def test_413_halves_the_batch_size(tmp_path: Path) -> None:
    def small_only(path: str, body: Any, n: int) -> Answer:
        if len(body) > 10:
            return 413, {"detail": "too many"}, {}
        return accept_all(path, body, n)

    box = tmp_path / "o.sqlite3"
    with StubIngest(small_only) as stub:
        report = simulate(fast_config(stub.url, box, mode="batch", count=90, batch_size=40))
    assert report.drained and report.outbox.acked == 90 and report.outbox.rejected == 0
    assert_nothing_lost(box, stub)


def _scanner(url: str, box: Path) -> list[str]:
    """The scanner command against ``url`` with no key: a unit test creates none in a database."""
    return ["scanner", "--url", url, "--outbox", str(box), "--no-key"]


def test_cli_run_summary_and_status(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"
    runner = CliRunner()
    with StubIngest() as stub:
        result = runner.invoke(
            app,
            [*_scanner(stub.url, box), "--count", "9", "--rate", "100", "--json"],
        )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["drained"] and summary["outbox"]["acked"] == 9 and summary["run"]["generated"] == 9

    status = runner.invoke(app, ["scanner", "--status", "--outbox", str(box), "--json"])
    assert status.exit_code == 0, status.output
    assert orjson.loads(status.stdout)["acked"] == 9


def test_cli_exit_code_3_when_scans_stay_pending(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"
    args = _scanner(f"http://127.0.0.1:{free_port()}", box)
    result = CliRunner().invoke(app, [*args, "--count", "3", "--drain-timeout", "0.2", "--quiet"])
    assert result.exit_code == 3, result.output
    assert outbox_status(box).pending == 3


@pytest.mark.parametrize("bad", [{"rate_per_device": 0.0}, {"url": "ftp://x"}, {"duplicate_ratio": 1.0}])
def test_invalid_configs_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SimulatorConfig(**{"url": "http://127.0.0.1:1", "outbox_path": tmp_path / "o.sqlite3", **bad})


def test_an_unwritable_outbox_stops_the_run_instead_of_going_on_blind(tmp_path: Path) -> None:
    box = tmp_path / "o.sqlite3"

    async def scenario(url: str) -> None:
        run = asyncio.ensure_future(Simulator(fast_config(url, box, count=None, duration_s=10.0)).run())

        def has_rows() -> bool:
            with contextlib.suppress(ConfigError):  # no file yet, or the file before its table
                return outbox_status(box).total > 0
            return False

        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(has_rows):  # the run is writing its outbox
            assert not run.done() and time.monotonic() < deadline, "the outbox never got a row"
            await asyncio.sleep(0.02)

        def break_outbox() -> None:
            with sqlite3.connect(box, timeout=5) as conn:
                conn.execute("DROP TABLE outbox")

        await asyncio.to_thread(break_outbox)
        with pytest.raises(PipelineError, match="scanner stopped"):
            await asyncio.wait_for(run, 5)

    with StubIngest() as stub:
        asyncio.run(scenario(stub.url))
