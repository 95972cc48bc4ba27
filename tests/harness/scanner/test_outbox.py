"""The outbox state machine: pending -> acked | rejected, retries with a due time, leases, persistence."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from barcode_harness.scanner.outbox import Outbox, OutboxItem, Outcome, State, outbox_status
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, counter_scan_ids
from barcode_pipeline.domain.scan import ScanEvent
from barcode_pipeline.errors import ConfigError

NOW = 1_700_000_000_000


def scans(n: int, seed: int = 1) -> list[ScanEvent]:
    factory = ScanFactory(SEEDED_DEVICES, seed=seed, scan_ids=counter_scan_ids(f"s{seed}-"))
    return [factory.next() for _ in range(n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.sqlite3"


def add(box: Outbox, new: list[ScanEvent], *, now_ms: int, lease_ms: int = 0) -> list[OutboxItem]:
    return box.write(new, now_ms=now_ms, lease_ms=lease_ms).added


def state_of(path: Path, seq: int) -> State:
    with sqlite3.connect(path) as conn:
        return State(conn.execute("SELECT state FROM outbox WHERE seq = ?", (seq,)).fetchone()[0])


def rejected(path: Path) -> list[tuple[int, int, str]]:
    """(seq, status, body the server answered) of every rejected row."""
    with sqlite3.connect(path) as conn:
        query = "SELECT seq, last_status, last_error FROM outbox WHERE state = 2 ORDER BY seq"
        return conn.execute(query).fetchall()


def test_new_scans_are_pending_and_leased_ones_are_not_due(path: Path) -> None:
    with closing(Outbox(path)) as box:
        items = add(box, scans(5), now_ms=NOW, lease_ms=60_000)
        assert [i.seq for i in items] == [1, 2, 3, 4, 5]
        assert outbox_status(path).pending == 5
        assert box.claim_due(now_ms=NOW, limit=10, lease_ms=1000) == []
        due = box.claim_due(now_ms=NOW + 60_000, limit=10, lease_ms=1000)
        assert [i.scan for i in due] == [i.scan for i in items]


def test_ack_retry_reject_transitions(path: Path) -> None:
    with closing(Outbox(path)) as box:
        a, b, c = add(box, scans(3), now_ms=NOW, lease_ms=60_000)
        result = box.write(
            now_ms=NOW + 1,
            outcomes=[
                Outcome(a.seq, State.ACKED, 202),
                Outcome(b.seq, State.PENDING, 503, "HTTP 503", NOW + 500),
                Outcome(c.seq, State.REJECTED, 422, '{"field":"barcode"}'),
            ],
        )
        assert (result.acked, result.retried, result.rejected) == (1, 1, 1)
        assert state_of(path, a.seq) is State.ACKED
        assert state_of(path, b.seq) is State.PENDING
        assert state_of(path, c.seq) is State.REJECTED
        counts = outbox_status(path)
        assert (counts.pending, counts.acked, counts.rejected, counts.sent, counts.attempts) == (
            1,
            1,
            1,
            3,
            3,
        )
        # the failed one comes back once its back-off expired, with its attempt count
        assert box.claim_due(now_ms=NOW + 499, limit=10, lease_ms=1000) == []
        (again,) = box.claim_due(now_ms=NOW + 500, limit=10, lease_ms=1000)
        assert again.seq == b.seq and again.attempts == 1
        # the rejected one keeps the server's answer and is never due again
        assert rejected(path) == [(c.seq, 422, '{"field":"barcode"}')]
        assert box.claim_due(now_ms=NOW + 10**9, limit=10, lease_ms=1000, exclude={b.seq}) == []


def test_outcomes_only_apply_to_pending_rows(path: Path) -> None:
    with closing(Outbox(path)) as box:
        (a,) = add(box, scans(1), now_ms=NOW)
        box.write(now_ms=NOW, outcomes=[Outcome(a.seq, State.REJECTED, 400, "bad")])
        late = box.write(
            now_ms=NOW,
            outcomes=[Outcome(a.seq, State.ACKED, 202), Outcome(a.seq, State.PENDING, 503, "x", NOW)],
        )
        assert (late.acked, late.retried) == (0, 0)
        assert state_of(path, a.seq) is State.REJECTED


def test_claim_skips_rows_held_in_memory_and_leases_what_it_returns(path: Path) -> None:
    with closing(Outbox(path)) as box:
        items = add(box, scans(4), now_ms=NOW)  # not leased: due now
        first = box.claim_due(now_ms=NOW, limit=10, lease_ms=1000, exclude={items[0].seq})
        assert [i.seq for i in first] == [i.seq for i in items[1:]]
        assert [i.seq for i in box.claim_due(now_ms=NOW, limit=10, lease_ms=1000)] == [items[0].seq]
        assert box.claim_due(now_ms=NOW + 999, limit=10, lease_ms=1000) == []


def test_everything_survives_a_reopen_and_leases_end_at_restart(path: Path) -> None:
    batch = scans(10)
    with closing(Outbox(path)) as box:
        items = add(box, batch, now_ms=NOW, lease_ms=3_600_000)
        box.write(now_ms=NOW, outcomes=[Outcome(i.seq, State.ACKED, 202) for i in items[:4]])
    with closing(Outbox(path)) as box:
        counts = outbox_status(path)
        assert (counts.total, counts.pending, counts.acked) == (10, 6, 4)
        assert box.make_all_due(NOW + 1) == 6
        due = box.claim_due(now_ms=NOW + 1, limit=100, lease_ms=1000)
        assert [i.scan for i in due] == batch[4:]
        (new,) = add(box, scans(1, seed=2), now_ms=NOW)
        assert new.seq == 11  # numbering continues


def test_one_writer_per_outbox_but_status_reads_while_it_runs(path: Path) -> None:
    with closing(Outbox(path)) as box:
        add(box, scans(3), now_ms=NOW)
        with pytest.raises(ConfigError, match="in use"):
            Outbox(path)
        assert outbox_status(path).pending == 3
    with closing(Outbox(path)):  # released on close
        pass


def test_status_of_a_missing_outbox_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        outbox_status(tmp_path / "nope.sqlite3")


def test_requeue_rejected_and_purge_acked_keep_the_counts_honest(path: Path) -> None:
    with closing(Outbox(path)) as box:
        items = add(box, scans(6), now_ms=NOW)
        box.write(
            now_ms=NOW,
            outcomes=[
                *(Outcome(i.seq, State.ACKED, 202) for i in items[:3]),
                Outcome(items[3].seq, State.REJECTED, 404, "not found"),
            ],
        )
        assert box.purge_acked() == 3
        counts = outbox_status(path)
        assert (counts.total, counts.acked, counts.rejected, counts.pending) == (6, 3, 1, 2)
        assert box.requeue_rejected(NOW) == 1
        assert outbox_status(path).pending == 3
        assert state_of(path, items[3].seq) is State.PENDING


def test_batched_transactions_handle_a_large_backlog(path: Path) -> None:
    """Batched transactions: insert + ack of 20,000 scans with synchronous=FULL.

    Only a sanity floor on speed here: the throughput figure belongs to a benchmark, since on a
    shared CI machine a tight threshold measures the machine's disk and cores, not the outbox.
    """
    batch = scans(20_000)
    with closing(Outbox(path)) as box:
        start = time.perf_counter()
        for i in range(0, len(batch), 500):
            items = add(box, batch[i : i + 500], now_ms=NOW, lease_ms=60_000)
            box.write(now_ms=NOW, outcomes=[Outcome(it.seq, State.ACKED, 202) for it in items])
        elapsed = time.perf_counter() - start
        assert outbox_status(path).acked == 20_000
    assert 20_000 / elapsed > 300, f"{20_000 / elapsed:.0f} scans/s"
