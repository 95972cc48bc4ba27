"""The whole pipeline as users run it: HTTP -> Kafka -> processor -> Redis Streams -> workers -> DB.

One pipeline (real child processes, as ``barcode-pipeline run`` starts them) serves every test of
this module, on its own ingest port, Redis database and MariaDB database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from confluent_kafka import Producer

from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.auth.store import create_key
from barcode_pipeline.db import migrate
from barcode_pipeline.domain import named_fields
from barcode_pipeline.ops.dlt import read_dlt
from barcode_pipeline.ops.verify import verify_scan_ids
from barcode_pipeline.processor.routing import shard_of
from barcode_pipeline.run.pipeline import running_pipeline, wait_drained
from tests.kafka_helpers import start_group_at_log_end
from tests.stack_helpers import redis_db

pytestmark = pytest.mark.integration

DEVICE = "SEOUL-CENTER-PC-001"


class Running:
    """The module's pipeline; :meth:`stop` drains it (the last test checks its log after that)."""

    def __init__(self, settings: HarnessSettings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self._stack = ExitStack()
        self._stack.enter_context(running_pipeline(settings, log_path=log, start_stack=False))

    def stop(self) -> None:
        self._stack.close()  # drains front to back, then the children have exited


@pytest.fixture(scope="module")
def running(stack_settings: HarnessSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    db_url = migrate.database_url(stack_settings.db.url, "bp_test_e2e")
    migrate.drop_database(db_url)
    migrate.create_database(db_url)
    # The stack's own Redis (database 12) and ingest port: the shared stack's ports are per checkout.
    settings = stack_settings.updated(
        {
            "db_url": db_url,
            "redis_url": redis_db(stack_settings.redis.url, 12),
            "ingest_processes": 1,
            "worker_max_delay_ms": 100,
            "processor_group": f"test-e2e-{uuid.uuid4().hex[:8]}",
        }
    )
    migrate.upgrade(db_url)  # the key table, so the key exists before ingest starts (it requires one)
    settings = settings.updated({"ingest_api_key": create_key(db_url, "test-e2e", "*", rate=0)})
    redis.Redis.from_url(settings.redis.url).flushdb()
    start_group_at_log_end(settings, settings.processor.group)
    run = Running(settings, tmp_path_factory.mktemp("e2e") / "pipeline.log")
    try:
        yield run
    finally:
        run.stop()
        migrate.drop_database(db_url)


@pytest.fixture(scope="module")
def pipeline(running: Running) -> HarnessSettings:
    return running.settings


@pytest.fixture
def post(pipeline: HarnessSettings) -> Iterator[Callable[..., httpx.Response]]:
    auth = client_headers(pipeline.ingest_api_key)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{pipeline.ingest.port}", timeout=10, headers=auth
    ) as client:

        def send(path: str, body: Any) -> httpx.Response:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            return client.post(path, content=content, headers={"content-type": "application/json"})

        yield send


def scan(i: int, *, device: str = DEVICE, scan_id: str | None = None) -> dict[str, Any]:
    return {"barcode": f"880{i:010d}", "deviceId": device, "scanTime": int(time.time() * 1000),
            "scanId": scan_id or f"e2e-{uuid.uuid4().hex}"}  # fmt: skip


def test_n_scans_in_n_rows(pipeline: HarnessSettings, post: Callable[..., httpx.Response]) -> None:
    scans = [scan(i) for i in range(150)]
    for s in scans[:100]:
        assert post("/ingest/barcode", s).status_code == 202
    batch = post("/ingest/barcodes", scans[100:])
    assert batch.status_code == 200 and batch.json() == {"total": 50, "succeeded": 50, "failedIndices": []}
    wait_drained(pipeline, timeout=60)
    check = verify_scan_ids(pipeline.db.url, [s["scanId"] for s in scans])
    assert (check.stored, check.missing, check.duplicate_rows) == (150, 0, 0)


def test_the_same_scan_sent_five_times_is_one_row(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    same = scan(1)
    for _ in range(5):
        assert post("/ingest/barcode", same).status_code == 202
    unique = {**scan(2), "barcode": f"77{uuid.uuid4().int % 10**11:011d}"}
    without_id = {k: v for k, v in unique.items() if k != "scanId"}  # derived scanId: resends still dedup
    for _ in range(5):
        assert post("/ingest/barcode", without_id).status_code == 202
    wait_drained(pipeline, timeout=60)
    check = verify_scan_ids(pipeline.db.url, [same["scanId"]])
    assert (check.stored, check.duplicate_rows) == (1, 0)
    rows = _query(
        pipeline, "SELECT COUNT(*) FROM barcodes WHERE original_barcode = %s", without_id["barcode"]
    )
    assert rows == [(1,)]


def test_a_batch_with_an_invalid_item_is_rejected_whole(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    good = [scan(i) for i in range(3)]
    bad = {**scan(9), "barcode": "has space"}
    reply = post("/ingest/barcodes", [*good, bad])
    assert reply.status_code == 422
    assert reply.json()["field"] == "barcode" and reply.json()["index"] == 3
    wait_drained(pipeline, timeout=60)
    assert verify_scan_ids(pipeline.db.url, [s["scanId"] for s in good]).stored == 0


def test_per_device_order_is_kept_in_its_shard(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    device = f"E2E-ORDER-{uuid.uuid4().hex[:6]}"  # unknown device: ends in the DLQ, but its order is visible
    ids = [f"ord-{uuid.uuid4().hex[:8]}-{i:03d}" for i in range(40)]
    for i, scan_id in enumerate(ids):
        assert post("/ingest/barcode", scan(i, device=device, scan_id=scan_id)).status_code == 202
    wait_drained(pipeline, timeout=60)
    r = redis.Redis.from_url(pipeline.redis.url, decode_responses=True)
    stream = names.stream_name(shard_of(device, pipeline.streams.shards))
    scans = [named_fields(f) for _id, f in r.xrange(stream)]
    seen = [f["sid"] for f in scans if f["dev"] == device]
    assert seen == ids


def test_unknown_device_lands_in_the_dlq_with_its_reason(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    s = scan(5, device=f"E2E-UNKNOWN-{uuid.uuid4().hex[:6]}")
    assert post("/ingest/barcode", s).status_code == 202
    wait_drained(pipeline, timeout=60)
    r = redis.Redis.from_url(pipeline.redis.url, decode_responses=True)
    letters = [f for _id, f in r.xrange(names.DLQ_STREAM) if named_fields(f).get("sid") == s["scanId"]]
    assert len(letters) == 1 and "unknown device" in letters[0]["dlq_reason"]
    assert verify_scan_ids(pipeline.db.url, [s["scanId"]]).stored == 0


def test_poison_on_the_topic_goes_to_the_dlt_and_the_pipeline_goes_on(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    since = int(time.time() * 1000) - 1
    tag = uuid.uuid4().hex[:8]  # this test's poison, among whatever else the shared DLT holds
    undecodable = b"\xff\xfe not json " + tag.encode()
    invalid = orjson.dumps({"barcode": "x y", "deviceId": DEVICE, "scanId": f"poison-{tag}"})
    producer = Producer(kafka_adapter.producer_config(pipeline))
    producer.produce(names.TOPIC, undecodable, key=DEVICE.encode())
    producer.produce(names.TOPIC, invalid, key=DEVICE.encode())
    assert producer.flush(10) == 0
    after = scan(77)
    assert post("/ingest/barcode", after).status_code == 202
    wait_drained(pipeline, timeout=60)
    assert verify_scan_ids(pipeline.db.url, [after["scanId"]]).stored == 1
    mine = {x.raw: x for x in read_dlt(pipeline, since_ms=since) if x.raw in (undecodable, invalid)}
    assert set(mine) == {undecodable, invalid}, "each poison record is in the DLT"
    assert mine[undecodable].reason.startswith("undecodable JSON")
    assert mine[invalid].reason.startswith("invalid barcode")
    assert mine[undecodable].key == DEVICE.encode()
    assert all(x.origin.startswith(f"{names.TOPIC}/") for x in mine.values())


def _query(settings: HarnessSettings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    from barcode_pipeline.adapters import db

    conn = db.connect(settings.db.url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


# Printable ASCII that means something to SQL, Redis, a shell or a template engine: stored as sent.
HOSTILE_BARCODES = [
    "';DROP/**/TABLE/**/barcodes;--",
    "1'OR'1'='1",
    '"),(1,2,3);--',
    "FLUSHALL",
    "*1\\r\\n$8\\r\\nFLUSHALL",
    "EVAL\"redis.call('flushall')\"0",
    "%s%s%n",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "\\x00\\';--",
]
HOSTILE_SCAN_IDS = ["FLUSHALL", "DEL:barcode:stream:0", "x--", "1:EVAL:0", "barcode:seen:e:x"]


def test_values_that_look_like_commands_are_stored_literally(
    pipeline: HarnessSettings, post: Callable[..., httpx.Response]
) -> None:
    scans = [{**scan(i), "barcode": b} for i, b in enumerate(HOSTILE_BARCODES)]
    scans += [
        scan(100 + i, scan_id=f"{sid}-{uuid.uuid4().hex[:8]}") for i, sid in enumerate(HOSTILE_SCAN_IDS)
    ]
    for s in scans:
        assert post("/ingest/barcode", s).status_code == 202, s
    wait_drained(pipeline, timeout=60)
    marks = ", ".join(["%s"] * len(scans))
    rows = _query(
        pipeline, f"SELECT scan_id, original_barcode FROM barcodes WHERE scan_id IN ({marks})",
        *[s["scanId"] for s in scans],
    )  # fmt: skip
    assert sorted(rows) == sorted((s["scanId"], s["barcode"]) for s in scans)
    stream = names.stream_name(shard_of(DEVICE, pipeline.streams.shards))
    assert redis.Redis.from_url(pipeline.redis.url).exists(stream)  # nothing was flushed


def test_pipeline_log_has_no_tracebacks_after_the_drain(running: Running) -> None:
    """Last in this module: stopping drains every service, and a shutdown error shows up only then."""
    running.stop()
    text = running.log.read_text()
    assert (
        f"worker {names.node_member(running.settings.node_name, 'worker-1')} stopped" in text
    )  # the shutdown
    assert "Traceback" not in text
