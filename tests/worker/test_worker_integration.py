"""The persistence worker on the real Redis and MariaDB (in-process workers on threads)."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest
import redis
from prometheus_client import REGISTRY

from barcode_pipeline import names
from barcode_pipeline.adapters.db import db_time
from barcode_pipeline.db import migrate, queries
from barcode_pipeline.domain import SCAN_FIELD
from barcode_pipeline.domain.dead_letter import Cause
from barcode_pipeline.worker.service import Worker, WorkerOptions
from barcode_pipeline.worker.storage import BarcodeStore, to_row
from tests.stack_helpers import wait_until
from tests.worker.conftest import DEVICES, REDIS_DB, Db, Env

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_entry_is_stored_once_and_acked(env: Env) -> None:
    scans = env.many(1200)  # several batches of 500
    env.add(scans)
    env.start("w1")
    wait_until(lambda: env.db.count() == 1200, 20, "1200 rows")
    wait_until(lambda: env.pending() == 0, 5, "an empty PEL")
    assert env.db.distinct_ids() == 1200
    stored = env.db.query("SELECT internal_barcode_id, scan_id, original_barcode, center_id, device_id"
                          " FROM barcodes ORDER BY id")  # fmt: skip
    centers = dict(zip(DEVICES, ("CENTER-1", "CENTER-2", "CENTER-3"), strict=True))
    assert {row[0] for row in stored} == {s.internal_barcode_id for s in scans}
    assert all(row[3] == centers[row[4]] for row in stored)

    # The processor (or a replay) publishing the very same records again must not add rows.
    duplicates_before = metric("bp_worker_duplicates_total")
    env.add(scans)
    wait_until(lambda: metric("bp_worker_duplicates_total") - duplicates_before >= 1200, 20, "duplicates")
    wait_until(lambda: env.pending() == 0, 5, "an empty PEL")
    assert env.db.count() == 1200
    assert env.dlq() == []


def test_a_lone_entry_is_written_when_the_delay_expires(env: Env) -> None:
    env.start("w1", env.settings.updated({"worker_max_delay_ms": 300}))
    time.sleep(0.3)  # let the worker settle into its blocking read
    env.add([env.scan(0)])
    took = wait_until(lambda: env.db.count() == 1, 5, "the row", interval=0.005)
    # Written by the delay, not by the batch size (500): never before 0.3 s; loose above (CI load).
    assert 0.25 <= took <= 3.0, f"stored after {took:.3f}s; expected about max_delay (0.3s)"


def test_a_full_batch_is_written_at_once_and_the_rest_on_shutdown(env: Env) -> None:
    settings = env.settings.updated({"worker_batch_size": 50, "worker_max_delay_ms": 60_000})
    worker = env.start("w1", settings)
    env.add(env.many(60))
    wait_until(lambda: env.db.count() == 50, 5, "the first full batch")
    time.sleep(0.5)
    assert env.db.count() == 50, "the 10 left over must wait for size or delay"
    worker.stop()  # graceful: the partial batch is committed and acked before exit
    env.threads[-1][1].join(15)
    assert env.db.count() == 60
    assert env.pending() == 0


def test_unknown_device_and_malformed_entries_go_to_the_dlq_and_are_acked(env: Env) -> None:
    good = env.scan(1)
    stray = env.scan(2, device="NOT-A-MAPPED-PC")
    env.add([good, stray])
    env.add_raw({"id": "x", "dev": "SEOUL-CENTER-PC-001"}, shard=1)
    env.add_raw(
        {b"id": b"\xff\xfe", b"sid": b"s", b"bc": b"b", b"dev": b"d", b"st": b"1", b"pt": b"1"}, shard=2
    )
    env.start("w1")
    wait_until(lambda: len(env.dlq()) == 3, 10, "three dead letters")
    wait_until(lambda: env.pending() == 0, 5, "all acked")
    assert env.db.count() == 1
    by_reason = {d["dlq_reason"].split(":")[0]: d for d in env.dlq()}
    assert set(by_reason) == {"unknown device", "malformed entry"} and len(env.dlq()) == 3
    unknown = by_reason["unknown device"]
    assert "NOT-A-MAPPED-PC" in unknown["dlq_reason"]
    assert unknown["dlq_stream"] == env.stream_of("NOT-A-MAPPED-PC")
    assert unknown["dlq_consumer"] == "w1" and unknown["dlq_id"]
    assert unknown[SCAN_FIELD].encode() == stray.to_entry()  # the original, intact
    assert metric("bp_worker_dead_lettered_total", cause="unknown_device") >= 1


def test_an_entry_delivered_too_often_goes_to_the_dlq(env: Env) -> None:
    env.create_groups()
    scan = env.scan(7)
    [entry_id] = env.add([scan])
    stream = env.stream_of(scan.device_id)
    env.redis.xreadgroup(names.WORKER_GROUP, "ghost", {stream: ">"})
    env.redis.xreadgroup(names.WORKER_GROUP, "ghost", {stream: "0"})  # 2nd delivery
    env.redis.xreadgroup(names.WORKER_GROUP, "ghost", {stream: "0"})  # 3rd; the claim makes it 4
    env.start("w1", env.settings.updated({"max_deliveries": 3}))  # "ghost" has no heartbeat
    wait_until(lambda: len(env.dlq()) == 1, 10, "the dead letter")
    letter = env.dlq()[0]
    assert letter["dlq_id"] == entry_id and letter["dlq_deliveries"] == "4"
    assert "delivered 4 times" in letter["dlq_reason"]
    wait_until(lambda: env.pending() == 0, 5, "the ack")
    assert env.db.count() == 0


def test_a_slow_but_live_workers_entries_are_claimed_only_after_the_idle_limit(env: Env) -> None:
    env.create_groups()
    scans = env.many(20)
    env.add(scans)
    env.redis.set(names.heartbeat_key("slowpoke"), "alive", ex=60)
    env.redis.xreadgroup(names.WORKER_GROUP, "slowpoke", dict.fromkeys(names.all_streams(4), ">"))
    read_at = time.monotonic()  # idle time counts from this delivery
    assert env.pending("slowpoke") == 20
    env.start("w1", env.settings.updated({"claim_min_idle_ms": 6000}))
    time.sleep(max(0.0, read_at + 2.5 - time.monotonic()))  # w1 has swept twice by now
    assert env.pending("slowpoke") == 20 and env.db.count() == 0, "a live worker's entries were stolen"
    wait_until(lambda: env.db.count() == 20, 15, "the idle claim")
    assert time.monotonic() - read_at >= 6.0
    wait_until(lambda: env.pending() == 0, 5, "the acks")
    assert "slowpoke" in env.consumers(), "a live consumer must not be removed"


def test_a_read_whose_reply_was_lost_is_reread_after_the_reconnect(env: Env) -> None:
    """Entries delivered to this worker's name by a read it never saw (the reply died with the
    connection, e.g. Redis paused past the socket timeout) are processed once it reconnects,
    not after the idle claim (set far out of reach here)."""
    env.create_groups()
    worker = env.start("w1", env.settings.updated({"claim_min_idle_ms": 600_000}))
    scans = env.many(20)
    env.add(scans)
    # the served read whose reply w1 never got: its entries are pending under "w1"
    lost = redis.Redis(connection_pool=env.redis.connection_pool)
    lost.xreadgroup(names.WORKER_GROUP, "w1", dict.fromkeys(names.all_streams(4), ">"))
    assert env.pending("w1") == 20 and env.db.count() == 0
    me = env.redis.client_id()
    for client in env.redis.client_list():
        if int(client["db"]) == REDIS_DB and int(client["id"]) != me:
            env.redis.client_kill_filter(_id=client["id"])  # w1's connections drop: a read error
    wait_until(lambda: env.db.count() == 20, 15, "the lost read's entries stored")
    wait_until(lambda: env.pending() == 0, 5, "the acks")
    assert worker.ready.is_set()


def test_dead_consumers_without_entries_are_removed(env: Env) -> None:
    env.create_groups()
    env.redis.xgroup_createconsumer(names.stream_name(0), names.WORKER_GROUP, "gone")
    assert "gone" in env.consumers()
    env.start("w1")
    wait_until(lambda: "gone" not in env.consumers(), 5, "the dead consumer to be removed")
    env.add([env.scan(1)])
    wait_until(lambda: "w1" in env.consumers() and env.pending() == 0, 5, "w1 to work on")


def test_worker_waits_out_a_missing_database_without_acking(env: Env) -> None:
    late_url = migrate.database_url(env.settings.db.url, "bp_test_worker_late")
    migrate.drop_database(late_url)
    try:
        env.add(env.many(30))
        failures = metric("bp_worker_db_failures_total")
        env.start("w1", env.settings.updated({"db_url": late_url}))
        wait_until(lambda: metric("bp_worker_db_failures_total") >= failures + 2, 10, "failed attempts")
        assert env.pending("w1") == 30, "nothing may be acked while the database is away"
        assert env.threads[-1][1].is_alive()
        migrate.create_database(late_url)
        migrate.upgrade(late_url)
        wait_until(lambda: Db(late_url).count() == 30, 15, "the rows once the database is back")
        wait_until(lambda: env.pending() == 0, 5, "the acks")
    finally:
        env.stop_all()
        migrate.drop_database(late_url)


def test_an_empty_center_mapping_makes_the_worker_wait_instead_of_dead_lettering(env: Env) -> None:
    """A database being restored or created has the table before its rows: nothing is "unknown" yet."""
    url = migrate.database_url(env.settings.db.url, "bp_test_worker_unseeded")
    migrate.drop_database(url)
    migrate.create_database(url)
    migrate.upgrade(url)
    unseeded = Db(url)
    mapping = unseeded.query("SELECT device_id, center_id, center_name FROM device_center_mapping")
    unseeded.query("DELETE FROM device_center_mapping")
    try:
        env.add(env.many(10))
        failures = metric("bp_worker_db_failures_total")
        env.start("w1", env.settings.updated({"db_url": url}))
        wait_until(lambda: metric("bp_worker_db_failures_total") >= failures + 2, 10, "failed attempts")
        assert env.dlq() == [] and env.pending("w1") == 10, "scans were given up on an empty mapping"
        # One statement: a worker reloading between row-by-row INSERTs would see a partial mapping.
        values = ", ".join(["(%s, %s, %s)"] * len(mapping))
        unseeded.query("INSERT INTO device_center_mapping (device_id, center_id, center_name)"
                       f" VALUES {values}", *[v for row in mapping for v in row])  # fmt: skip
        wait_until(lambda: unseeded.count() == 10, 15, "the rows once the mapping is there")
        wait_until(lambda: env.pending() == 0, 5, "the acks")
        assert env.dlq() == []
    finally:
        env.stop_all()
        migrate.drop_database(url)


# ---------------------------------------------------------------------------- storage on its own


def test_a_batch_is_one_insert_statement_and_one_commit(env: Env) -> None:
    store = BarcodeStore(env.settings.db.url, dedup_policy="event")
    rows = [to_row(s, "CENTER-1", "event") for s in env.many(300)]

    def status() -> dict[str, int]:
        conn = store._connection()  # the store's own session: only its statements count
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Com_insert', 'Com_commit')")
            values = {str(k): int(v) for k, v in cur.fetchall()}
        conn.rollback()
        return values

    try:
        before = status()
        outcome = store.write(rows)
        after = status()
        assert (outcome.inserted, outcome.duplicates, outcome.rejected) == (300, 0, [])
        assert after["Com_insert"] - before["Com_insert"] == 1
        assert after["Com_commit"] - before["Com_commit"] == 1
        again = store.write(rows[:100] + rows[:100])  # a batch can even repeat itself
        assert (again.inserted, again.duplicates) == (0, 200)
        assert env.db.count() == 300
    finally:
        store.close()


def test_stored_values_read_back_exactly_even_hostile_strings(env: Env) -> None:
    """The worker builds its INSERT text itself: quotes, backslashes, NUL and non-ASCII must survive."""
    store = BarcodeStore(env.settings.db.url, dedup_policy="barcode")
    hostile = ["it's", 'say "hi"', "back\\slash\\", "nul\x00byte", "line\nbreak\r", "ctrl-z\x1a", "바코드 😀"]
    base = env.scan(0)
    scans = [
        dataclasses.replace(
            env.scan(i + 1), scan_id=f"{text}-{i}", barcode=f"{text}-bc", scan_time=base.scan_time + 999 * i
        )
        for i, text in enumerate(hostile)
    ]
    try:
        outcome = store.write([to_row(s, f"C'{i}\\", "barcode") for i, s in enumerate(scans)])
        assert (outcome.inserted, outcome.rejected) == (len(hostile), [])
        got = env.db.query(
            "SELECT scan_id, original_barcode, center_id, dedup_barcode, scan_time, processed_time"
            " FROM barcodes ORDER BY scan_time"
        )
        expected = [
            (s.scan_id, s.barcode, f"C'{i}\\", s.barcode, db_time(s.scan_time), db_time(s.processed_time))
            for i, s in enumerate(scans)
        ]
        assert got == expected
    finally:
        store.close()


def test_a_batch_over_the_statement_limit_is_split_in_one_transaction(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "MAX_STATEMENT_BYTES", 2000)
    store = BarcodeStore(env.settings.db.url, dedup_policy="event")
    rows = [to_row(s, "CENTER-1", "event") for s in env.many(40)]
    try:
        outcome = store.write(rows + rows[:5])
        assert (outcome.inserted, outcome.duplicates, outcome.rejected) == (40, 5, [])
        assert env.db.count() == 40
    finally:
        store.close()


def test_policy_barcode_lets_the_first_scan_of_a_barcode_win(env: Env) -> None:
    store = BarcodeStore(env.settings.db.url, dedup_policy="barcode")
    first = env.scan(1)
    same_barcode = dataclasses.replace(env.scan(2), barcode=first.barcode)  # another scan event
    try:
        outcome = store.write([to_row(first, "C", "barcode"), to_row(same_barcode, "C", "barcode")])
        assert (outcome.inserted, outcome.duplicates) == (1, 1)
        assert env.db.query("SELECT internal_barcode_id FROM barcodes") == [(first.internal_barcode_id,)]
    finally:
        store.close()


def test_a_row_the_database_refuses_is_isolated_and_the_rest_stored(env: Env) -> None:
    store = BarcodeStore(env.settings.db.url, dedup_policy="event")
    rows = [to_row(s, "CENTER-1", "event") for s in env.many(9)]
    bad = list(rows[4])
    bad[3] = "C" * 65  # center_id is VARCHAR(64): strict mode refuses it
    rows[4] = tuple(bad)  # type: ignore[assignment]
    try:
        outcome = store.write(rows)
        assert outcome.inserted == 8
        assert [(i, cause) for i, cause, _ in outcome.rejected] == [(4, Cause.DB_REJECTED)]
        assert "rejected by the database" in outcome.rejected[0][2]
        assert env.db.count() == 8
    finally:
        store.close()


def test_redis_client_is_binary_so_odd_bytes_cannot_break_a_read(env: Env) -> None:
    from barcode_pipeline.adapters.redis import client as make_client

    client = make_client(env.settings, decode=False)
    try:
        client.xadd("probe", {b"k": b"\xff"})
        assert client.xrange("probe")[0][1] == {b"k": b"\xff"}
    finally:
        client.delete("probe")
        client.close()
    assert isinstance(client, redis.Redis)


# ---------------------------------------------------------------------------- liveness


def test_heartbeat_beats_while_the_loop_progresses_and_stops_when_it_stalls(env: Env) -> None:
    from barcode_pipeline.adapters.redis import client as make_client
    from barcode_pipeline.worker.recovery import Heartbeat

    progress = [time.monotonic()]
    client = make_client(env.settings, decode=False)
    beat = Heartbeat(client, "hb-test", 3.0, progress=lambda: progress[0], stall_limit_s=2.0)
    key = names.heartbeat_key("hb-test")
    try:
        beat.beat()
        beat.start()
        for _ in range(25):  # 5 s, well past the TTL: the thread keeps the key alive
            progress[0] = time.monotonic()
            time.sleep(0.2)
        assert env.redis.exists(key)
        assert 0 < env.redis.pttl(key) <= 3000
        # The main loop stops reporting progress (stuck): the key must expire, so others take over.
        wait_until(lambda: not env.redis.exists(key), 10, "the heartbeat to expire")
        progress[0] = time.monotonic()  # ...and resume when the loop does
        wait_until(lambda: bool(env.redis.exists(key)), 5, "the heartbeat to resume")
    finally:
        beat.stop()
        client.close()
    assert not env.redis.exists(key), "a stopped worker deletes its heartbeat at once"


def test_worker_survives_an_unreachable_redis_and_still_stops(env: Env) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = env.settings.updated({"redis_url": f"redis://127.0.0.1:{port}/3"})
    failures = metric("bp_worker_redis_failures_total")
    worker = Worker(settings, WorkerOptions(name="lonely", shutdown_grace_s=0.5))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_until(lambda: metric("bp_worker_redis_failures_total") >= failures + 2, 10, "retries")
    assert thread.is_alive() and not worker.ready.is_set()
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()


# ---------------------------------------------------------------------------- standby


def test_a_second_worker_stands_by_at_low_load_and_takes_over_when_the_first_stops(env: Env) -> None:
    # A generous join age: on a loaded machine one commit of the primary can take a few hundred ms,
    # which must not count as falling behind here (the join itself is tested below).
    settings = env.settings.updated({"worker_max_delay_ms": 100, "worker_standby_join_ms": 5000})
    first = env.start("w-a", settings)
    env.add([env.scan(0)])
    wait_until(lambda: env.db.count() == 1, 5, "the first row")  # w-a is now a known consumer
    second = env.start("w-b", settings)
    time.sleep(1.5)  # both have swept and seen each other
    first.batches_written = second.batches_written = 0
    for i in range(1, 31):  # a trickle: 20 scans/s, far below what one worker handles
        env.add([env.scan(i)])
        time.sleep(0.05)
    wait_until(lambda: env.db.count() == 31, 10, "the trickle stored")
    assert first.batches_written >= 1
    assert second.batches_written == 0, "the standby worker committed batches at low load"

    first.stop()  # a clean stop ends its heartbeat; the standby must now take new entries
    env.threads[0][1].join(15)  # gone for sure, so it cannot read what comes next
    env.add([env.scan(i) for i in range(31, 41)])
    wait_until(lambda: env.db.count() == 41, 10, "rows stored by the remaining worker")
    assert second.batches_written >= 1


def _live_idle_primary(env: Env) -> str:
    """A consumer that sorts first and has a heartbeat but never reads: a primary that fell behind."""
    env.create_groups()
    name = "a-stuck-primary"
    env.redis.set(names.heartbeat_key(name), "alive", ex=120)
    for stream in names.all_streams(4):
        env.redis.xgroup_createconsumer(stream, names.WORKER_GROUP, name)
    return name


def test_a_standby_joins_when_entries_have_waited_the_join_age(env: Env) -> None:
    _live_idle_primary(env)
    settings = env.settings.updated({"worker_max_delay_ms": 50, "worker_standby_join_ms": 600})
    standby = env.start("w-b", settings)
    time.sleep(1.5)  # it has swept and knows the primary is alive
    t0 = time.monotonic()
    env.add([env.scan(i) for i in range(5)])
    wait_until(lambda: env.db.count() == 5, 10, "rows stored by the standby")
    assert time.monotonic() - t0 >= 0.6, "the standby read before the entries had waited the join age"
    # the rows are committed before the entries are acknowledged (XACK follows COMMIT)
    wait_until(lambda: env.pending() == 0, 5, "the standby's acknowledgements")
    assert standby.batches_written >= 1 and env.pending() == 0


def test_a_standby_joins_at_once_when_a_full_batch_is_waiting(env: Env) -> None:
    _live_idle_primary(env)
    settings = env.settings.updated({"worker_batch_size": 20, "worker_standby_join_ms": 600_000})
    env.start("w-b", settings)
    time.sleep(1.5)
    env.add(env.many(5))
    time.sleep(1.0)
    assert env.db.count() == 0, "the standby read although neither a full batch nor an old entry waited"
    env.add([env.scan(i) for i in range(100, 120)])  # a full batch (20) is now waiting
    wait_until(lambda: env.db.count() == 20, 10, "a batch stored by the standby")
    time.sleep(0.5)
    assert env.db.count() == 20, "the 5 left are fewer than a batch and young: the primary's to take"


# ---------------------------------------------------------------------------- retention


def test_acknowledged_entries_are_trimmed_and_pending_ones_kept(env: Env) -> None:
    from barcode_pipeline.worker.retention import Trimmer

    env.create_groups()
    streams = names.all_streams(4)
    trim = Trimmer(env.redis, streams, retention_s=0, exact=True)

    def entries() -> set[tuple[str, str]]:  # (stream, id): ids repeat across streams
        return {(s, e[0].decode()) for s in streams for e in env.redis.xrange(s)}

    env.add(env.many(8))
    first = entries()
    env.redis.xreadgroup(names.WORKER_GROUP, "reader", dict.fromkeys(streams, ">"))  # all 8 pending
    env.add(env.many(4))  # not delivered yet
    later = entries() - first
    assert trim() == 0, "pending and undelivered entries must stay"
    delivered = {s: sorted((i for t, i in first if t == s), key=id_key) for s in streams}
    held = next(s for s in streams if len(delivered[s]) >= 2)  # one stream keeps its oldest pending
    for stream, got in delivered.items():
        acked = got[1:] if stream == held else got
        if acked:
            env.redis.xack(stream, names.WORKER_GROUP, *acked)
    kept = (held, delivered[held][0])
    assert trim() > 0
    remaining = entries()
    assert remaining >= later | {kept}, "a pending or undelivered entry was trimmed"
    # Of the acked entries only those behind the pending one (same stream, newer IDs) are left.
    assert remaining & first == {(held, i) for i in delivered[held]}

    env.redis.xack(held, names.WORKER_GROUP, kept[1])
    assert Trimmer(env.redis, streams, retention_s=60, exact=True)() == 0, "younger than the retention"
    assert Trimmer(env.redis, streams, retention_s=0, exact=True)() == len(delivered[held])
    assert entries() == later


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def test_workers_trim_the_streams_as_they_go(env: Env) -> None:
    settings = env.settings.updated(
        {"stream_trim_interval_s": 0.5, "stream_retention_s": 0, "worker_max_delay_ms": 50}
    )
    env.start("w1", settings)
    env.add(env.many(2000))
    wait_until(lambda: env.db.count() == 2000, 30, "2000 rows")
    streams = names.all_streams(4)
    # '~' keeps the newest, partly filled node of each stream (at most 100 entries by default)
    wait_until(lambda: sum(env.redis.xlen(s) for s in streams) <= 4 * 100, 10, "trimmed streams")
    assert env.pending() == 0 and env.db.count() == 2000
