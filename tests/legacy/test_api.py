"""The legacy baseline over real HTTP against the stack's MariaDB (database ``bp_test_legacy``)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import orjson
import pymysql
import pytest

from barcode_pipeline.db.migrate import database_url
from barcode_pipeline.domain import internal_barcode_id
from tests.legacy.conftest import SEEDED, Db, ThreadServer, refused_port, scan, wait_for_pool_waiters

pytestmark = pytest.mark.integration


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in metrics"
    return float(match.group(1))


def test_one_scan_is_committed_before_the_answer(legacy: httpx.Client, legacy_db: Db) -> None:
    body = scan("SEOUL-CENTER-PC-002")
    response = legacy.post("/ingest/barcode", content=orjson.dumps(body))
    assert response.status_code == 202, response.text
    assert response.json() == {"scanId": body["scanId"], "status": "accepted"}
    assert response.headers["content-type"] == "application/json"

    # No waiting: the row must already be there when the answer arrives.
    rows = legacy_db.query(
        "SELECT internal_barcode_id, center_id, device_id, original_barcode, scan_time, processed_time,"
        " saved_time, dedup_barcode FROM legacy_barcodes WHERE scan_id = %s",
        body["scanId"],
    )
    assert len(rows) == 1
    internal, center, device, barcode, scan_time, processed, saved, dedup = rows[0]
    assert internal == internal_barcode_id(body["deviceId"], body["scanId"], body["scanTime"], "Asia/Seoul")
    assert (center, device, barcode, dedup) == ("CENTER-2", body["deviceId"], body["barcode"], None)
    assert scan_time == datetime.fromtimestamp(body["scanTime"] / 1000, tz=UTC).replace(tzinfo=None)
    assert scan_time <= processed <= saved


def test_scan_sent_five_times_is_stored_once(legacy: httpx.Client, legacy_db: Db) -> None:
    body = scan()
    statuses = [legacy.post("/ingest/barcode", content=orjson.dumps(body)).status_code for _ in range(5)]
    assert statuses == [202] * 5
    assert len(legacy_db.rows_for(body["scanId"])) == 1


def test_concurrent_resends_neither_duplicate_nor_fail(
    serve_legacy: Callable[..., ThreadServer], legacy_db: Db
) -> None:
    """Resends racing each other wait on the unique key's lock and become no-ops, never a 5xx."""
    server = serve_legacy()
    body = orjson.dumps(scan("SEOUL-CENTER-PC-003"))

    def send(_: int) -> int:
        return httpx.post(f"{server.base_url}/ingest/barcode", content=body, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [202] * 16
    assert len(legacy_db.rows_for(orjson.loads(body)["scanId"])) == 1


def test_batch_stores_every_row_with_its_center(legacy: httpx.Client, legacy_db: Db) -> None:
    batch = [scan(device) for device in SEEDED for _ in range(3)]
    response = legacy.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert response.status_code == 200, response.text
    assert response.json() == {"total": 9, "succeeded": 9, "failedIndices": []}
    rows = legacy_db.rows_for(*(item["scanId"] for item in batch))
    assert [(r[0], r[2]) for r in rows] == [(item["scanId"], SEEDED[item["deviceId"]]) for item in batch]

    # Resending the whole batch is idempotent as well.
    again = legacy.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert again.status_code == 200
    assert len(legacy_db.rows_for(*(item["scanId"] for item in batch))) == 9


def test_empty_batch_is_fine(legacy: httpx.Client) -> None:
    response = legacy.post("/ingest/barcodes", content=b"[]")
    assert response.status_code == 200
    assert response.json() == {"total": 0, "succeeded": 0, "failedIndices": []}


def test_invalid_item_rejects_the_whole_batch(legacy: httpx.Client, legacy_db: Db) -> None:
    batch = [scan(), scan(), scan(barcode="has space"), scan()]
    response = legacy.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert response.status_code == 422
    assert response.json()["error"] == "validation"
    assert (response.json()["field"], response.json()["index"]) == ("barcode", 2)
    assert legacy_db.rows_for(*(item["scanId"] for item in batch)) == []


def test_unknown_device_is_rejected(legacy: httpx.Client, legacy_db: Db) -> None:
    body = scan("NOT-A-CENTER-PC")
    response = legacy.post("/ingest/barcode", content=orjson.dumps(body))
    assert response.status_code == 422
    assert response.json()["field"] == "deviceId"
    assert "index" not in response.json()
    assert "NOT-A-CENTER-PC" in response.json()["message"]

    batch = [scan(), scan("SEOUL-CENTER-PC-002"), scan("NOT-A-CENTER-PC"), scan()]
    response = legacy.post("/ingest/barcodes", content=orjson.dumps(batch))
    assert response.status_code == 422
    assert (response.json()["field"], response.json()["index"]) == ("deviceId", 2)
    assert legacy_db.rows_for(body["scanId"], *(item["scanId"] for item in batch)) == []


@pytest.mark.parametrize("path", ["/ingest/barcode", "/ingest/barcodes"])
def test_malformed_json_is_400(legacy: httpx.Client, path: str) -> None:
    response = legacy.post(path, content=b'{"barcode": ')
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"


def test_rule_violation_names_the_field(legacy: httpx.Client) -> None:
    response = legacy.post("/ingest/barcode", content=orjson.dumps(scan(scanTime=-1)))
    assert response.status_code == 422
    assert response.json()["field"] == "scanTime"


def test_oversize_body_and_batch_are_413(serve_legacy: Callable[..., ThreadServer], legacy_db: Db) -> None:
    server = serve_legacy(max_body_bytes=2048, max_batch_items=3)
    with server.client() as client:
        response = client.post("/ingest/barcode", content=b" " * 4096)
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"

        def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse up front
            for _ in range(10):
                yield b" " * 1024

        assert client.post("/ingest/barcode", content=chunks()).status_code == 413

        batch = [scan() for _ in range(4)]
        response = client.post("/ingest/barcodes", content=orjson.dumps(batch))
        assert response.status_code == 413
        assert legacy_db.rows_for(*(item["scanId"] for item in batch)) == []


def test_health_ready_and_metrics(legacy: httpx.Client) -> None:
    assert legacy.get("/health").json() == {"status": "ok"}
    assert legacy.get("/ready").json() == {"status": "ready", "db": "up"}
    assert legacy.post("/ingest/barcode", content=orjson.dumps(scan())).status_code == 202
    text = legacy.get("/metrics").text
    assert 'bp_legacy_request_seconds_count{route="/ingest/barcode",status="202"} 1.0' in text
    assert metric(text, "bp_legacy_db_commit_seconds_count") == 1
    assert metric(text, "bp_legacy_db_pool_wait_seconds_count") == 1  # requests only, not /ready
    assert metric(text, "bp_legacy_stored_total") == 1
    assert metric(text, "bp_legacy_db_connections_in_use") == 0
    assert legacy.get("/nowhere").status_code == 404


def test_database_down_gives_503_and_not_ready(serve_legacy: Callable[..., ThreadServer]) -> None:
    with refused_port() as port:  # held for the whole test: nothing else can start listening there
        server = serve_legacy(db_url=f"mysql://barcode:barcode@127.0.0.1:{port}/bp_test_legacy")
        with server.client() as client:
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "not_ready"
            response = client.post("/ingest/barcode", content=orjson.dumps(scan()))
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
            assert response.headers["retry-after"] == "1"
            batch = client.post("/ingest/barcodes", content=orjson.dumps([scan(), scan()]))
            assert batch.status_code == 503
            assert (batch.json()["succeeded"], batch.json()["failedIndices"]) == (0, [0, 1])


def test_missing_schema_is_not_ready(serve_legacy: Callable[..., ThreadServer], legacy_db: Db) -> None:
    empty = "bp_test_legacy_empty"
    legacy_db.query(f"DROP DATABASE IF EXISTS {empty}")
    legacy_db.query(f"CREATE DATABASE {empty}")
    try:
        server = serve_legacy(db_url=database_url(legacy_db.url, empty))
        with server.client() as client:
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert "legacy_barcodes" in ready.json()["reason"]
            assert "db upgrade" in ready.json()["reason"]
    finally:
        legacy_db.query(f"DROP DATABASE IF EXISTS {empty}")


def test_broken_pooled_connections_are_replaced(
    serve_legacy: Callable[..., ThreadServer], legacy_db: Db
) -> None:
    """Connections killed on the server side (restart, wait_timeout) are detected and reopened."""
    server = serve_legacy(app_options={"pool_size": 2})
    with server.client() as client:
        assert client.post("/ingest/barcode", content=orjson.dumps(scan())).status_code == 202
        ids = legacy_db.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
            "bp_test_legacy",
        )
        for (conn_id,) in ids:
            with contextlib.suppress(pymysql.MySQLError):  # it may have closed in between
                legacy_db.query(f"KILL {int(conn_id)}")
        deadline = time.monotonic() + 10
        while _connections_left(legacy_db, [int(conn_id) for (conn_id,) in ids]):
            assert time.monotonic() < deadline, "the killed connections are still there"
            time.sleep(0.02)
        time.sleep(0.7)  # past the validation window: the dead connections are pinged and replaced
        body = scan()
        assert client.post("/ingest/barcode", content=orjson.dumps(body)).status_code == 202
        assert len(legacy_db.rows_for(body["scanId"])) == 1
        assert client.get("/ready").status_code == 200


def _connections_left(db: Db, ids: list[int]) -> int:
    if not ids:
        return 0
    marks = ", ".join(["%s"] * len(ids))
    rows = db.query(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ({marks})", *ids)
    return int(rows[0][0])


def _inserts_running(db: Db) -> int:
    """Statements of the service still executing an INSERT (so blocked on the test's row lock).

    PROCESSLIST rather than INNODB_TRX: InnoDB refreshes the latter's snapshot only when it was not
    read for 0.1 s, so fast polling can keep seeing a stale one.
    """
    rows = db.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"
        " WHERE DB = %s AND COMMAND = 'Query' AND INFO LIKE 'INSERT INTO legacy_barcodes%%'",
        "bp_test_legacy",
    )
    return int(rows[0][0])


def test_exhausted_pool_makes_requests_wait_then_503(
    serve_legacy: Callable[..., ThreadServer], legacy_db: Db
) -> None:
    """One connection, held by a request stuck on a row lock: the next waits, then gets a 503 JSON."""
    pool_timeout_s = 3.0  # enough for the waiter below to get the connection however loaded the machine
    server = serve_legacy(app_options={"pool_size": 1, "pool_timeout_s": pool_timeout_s})
    pool = server.app.state.pool
    blocked = scan()
    locker = legacy_db.connect()
    results: dict[str, tuple[int, float]] = {}

    def post(name: str, body: dict[str, object]) -> None:
        started = time.monotonic()
        response = httpx.post(f"{server.base_url}/ingest/barcode", content=orjson.dumps(body), timeout=30)
        results[name] = (response.status_code, time.monotonic() - started)

    try:
        # The test's own uncommitted row with the same unique key: the service's INSERT waits on it.
        with locker.cursor() as cur:
            cur.execute(
                "INSERT INTO legacy_barcodes (internal_barcode_id, scan_id, original_barcode, center_id,"
                " device_id, scan_time, processed_time, saved_time) VALUES (%s, %s, %s, 'CENTER-1', %s,"
                " NOW(3), NOW(3), NOW(3))",
                (
                    internal_barcode_id(blocked["deviceId"], blocked["scanId"], blocked["scanTime"]),
                    blocked["scanId"],
                    blocked["barcode"],
                    blocked["deviceId"],
                ),
            )
        holder = threading.Thread(target=post, args=("holder", blocked))
        holder.start()
        deadline = time.monotonic() + 10
        while _inserts_running(legacy_db) < 1:
            assert time.monotonic() < deadline, f"the request never reached the row lock: {results}"
            time.sleep(0.05)

        # The only connection is taken: this request waits the pool timeout, then gives up.
        started = time.monotonic()
        with server.client() as client:
            response = client.post("/ingest/barcode", content=orjson.dumps(rejected := scan()))
        waited = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert response.headers["retry-after"] == "1"
        assert pool_timeout_s - 0.1 <= waited < pool_timeout_s + 7, waited

        # A request that arrives while blocked, but gets the connection within the timeout, succeeds.
        waiter = threading.Thread(target=post, args=("waiter", scan_waiting := scan()))
        waiter.start()
        wait_for_pool_waiters(pool)  # it is queued for the connection...
        time.sleep(0.3)  # ...and stays queued a while before the holder lets go
        locker.rollback()
    finally:
        locker.close()
    holder.join(30)
    waiter.join(30)
    assert results["holder"][0] == 202
    assert results["waiter"][0] == 202, results
    assert results["waiter"][1] >= 0.3  # it really waited for the connection
    assert len(legacy_db.rows_for(blocked["scanId"], scan_waiting["scanId"])) == 2
    assert legacy_db.rows_for(rejected["scanId"]) == []
    with server.client() as client:
        assert metric(client.get("/metrics").text, "bp_legacy_db_pool_timeouts_total") == 1
