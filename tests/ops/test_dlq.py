"""Dead-letter tools on the real Redis, Kafka and MariaDB of the shared stack.

Isolation: Redis database 9 (flushed per test, never FLUSHALL), MariaDB database ``bp_test_ops``
(re-created per module), and Kafka topics named per test, so neither the shared DLQ nor the main
topic of other suites is touched. The CLI test adds one record of its own to the shared DLT (the
CLI reads only that topic) and lists it by its time and its unique reason.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.cimpl import NewTopic
from typer.testing import CliRunner

from barcode_pipeline import names
from barcode_pipeline.adapters import kafka as kafka_adapter
from barcode_pipeline.adapters.db import connect
from barcode_pipeline.config import Settings, settings_env
from barcode_pipeline.db import migrate
from barcode_pipeline.domain import SCAN_FIELD, StoredScan
from barcode_pipeline.ops import dlq
from barcode_pipeline.ops import dlt as dlt_store
from barcode_pipeline.ops.dlq_commands import dlq_app

pytestmark = pytest.mark.integration

REDIS_DB = 9
TEST_DB = "bp_test_ops"
UNKNOWN = "unknown device: deviceId {!r} has no center mapping"


@pytest.fixture(scope="module")
def ops_db_url(stack_settings: Settings) -> Iterator[str]:
    url = migrate.database_url(stack_settings.db.url, TEST_DB)
    migrate.drop_database(url)
    migrate.create_database(url)
    migrate.upgrade(url)
    yield url
    migrate.drop_database(url)


@pytest.fixture
def settings(
    make_settings: Callable[..., Settings], stack_settings: Settings, ops_db_url: str
) -> Iterator[Settings]:
    parts = urlsplit(stack_settings.redis.url)
    s = make_settings(redis_url=urlunsplit(parts._replace(path=f"/{REDIS_DB}")), db_url=ops_db_url)
    r = redis.Redis.from_url(s.redis.url)
    r.flushdb()
    yield s
    r.flushdb()
    r.close()


def _dead_letter(
    settings: Settings, device: str, *, reason: str, shard: int = 1, extra: bytes = b"", original: bytes = b""
) -> str:
    """A DLQ entry shaped exactly as a worker writes it (original fields + dlq_* fields).

    The original is one field per name (as processors wrote entries before the JSON field), or
    ``original``, the JSON value of today's one field.
    """
    r = redis.Redis.from_url(settings.redis.url)
    try:
        scan: dict[bytes, bytes] = {
            b"id": f"DLV-{device}-261125-01J0000000000000000000000".encode(),
            b"sid": f"sid-{uuid.uuid4().hex[:8]}".encode(),
            b"bc": b"8801234567890" + extra,
            b"dev": device.encode(),
            b"st": b"1795600000000",
            b"pt": b"1795600000100",
        }
        fields: dict[bytes, bytes] = {
            **({SCAN_FIELD.encode(): original} if original else scan),
            b"dlq_stream": names.stream_name(shard).encode(),
            b"dlq_id": b"1795600000100-0",
            b"dlq_reason": reason.encode(),
            b"dlq_deliveries": b"1",
            b"dlq_consumer": b"worker-1",
            b"dlq_time": str(int(time.time() * 1000)).encode(),
        }
        return str(r.xadd(names.DLQ_STREAM, fields).decode())
    finally:
        r.close()


def _map(settings: Settings, device: str) -> None:
    conn = connect(settings.db.url, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO device_center_mapping (device_id, center_id, center_name)"
                " VALUES (%s, 'C-T', 'test')",
                (device,),
            )
    finally:
        conn.close()


def test_list_and_show_dlq_entries(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:6]}"
    entry_id = _dead_letter(settings, device, reason=UNKNOWN.format(device))
    letters = dlq.list_dlq(settings)
    assert [x.id for x in letters] == [entry_id]
    letter = letters[0]
    assert letter.device_id == device and letter.reason.startswith("unknown device")
    assert letter.origin == f"{names.stream_name(1)}/1795600000100-0"
    assert "dlq_reason" not in letter.fields and letter.fields["dev"] == device
    assert dlq.get_dlq(settings, entry_id) == letter
    assert dlq.list_dlq(settings, reason="max deliveries") == []


def test_a_dead_letter_in_the_json_format_names_its_device_and_scan_and_replays_intact(
    settings: Settings,
) -> None:
    device = f"T-{uuid.uuid4().hex[:6]}"
    scan = StoredScan(
        f"DLV-{device}-261125-01J", "sid-json", "880", device, 1_795_600_000_000, 1_795_600_000_100
    )
    entry_id = _dead_letter(settings, device, reason=UNKNOWN.format(device), original=scan.to_entry())
    (letter,) = dlq.list_dlq(settings)
    assert (letter.id, letter.device_id, letter.scan_id) == (entry_id, device, "sid-json")
    _map(settings, device)
    assert [i for i, _ in dlq.replay_dlq(settings, ids=[entry_id]).replayed] == [entry_id]
    r = redis.Redis.from_url(settings.redis.url)
    try:
        ((_id, fields),) = r.xrange(names.stream_name(1))
        assert fields == {SCAN_FIELD.encode(): scan.to_entry()}
    finally:
        r.close()


def test_replay_waits_for_the_device_mapping_then_moves_the_entry_once(settings: Settings) -> None:
    device = f"T-{uuid.uuid4().hex[:6]}"
    entry_id = _dead_letter(settings, device, reason=UNKNOWN.format(device), shard=2)
    before = dlq.get_dlq(settings, entry_id)
    assert before is not None

    refused = dlq.replay_dlq(settings, ids=[entry_id])
    assert not refused.replayed and "no center mapping" in refused.skipped[0][1]

    _map(settings, device)
    outcome = dlq.replay_dlq(settings, reason="unknown device")
    assert [i for i, _ in outcome.replayed] == [entry_id]
    r = redis.Redis.from_url(settings.redis.url)
    try:
        assert r.xlen(names.DLQ_STREAM) == 0
        ((_new_id, fields),) = r.xrange(names.stream_name(2))
        assert fields == {k.encode(): v.encode() for k, v in before.fields.items()}
    finally:
        r.close()

    again = dlq.replay_dlq(settings, ids=[entry_id])
    assert not again.replayed and "not in the DLQ" in again.skipped[0][1]


def test_permanent_failures_need_force_and_bytes_survive(settings: Settings) -> None:
    entry_id = _dead_letter(settings, "T-bytes", reason="malformed entry: bad utf-8", extra=b"\xff\xfe")
    assert dlq.replay_dlq(settings, everything=True).skipped[0][0] == entry_id
    assert dlq.replay_dlq(settings, everything=True, dry_run=True, force=True).replayed
    assert dlq.list_dlq(settings)  # a dry run changes nothing
    outcome = dlq.replay_dlq(settings, everything=True, force=True)
    assert [i for i, _ in outcome.replayed] == [entry_id]
    r = redis.Redis.from_url(settings.redis.url)
    try:
        ((_id, fields),) = r.xrange(names.stream_name(1))
        assert fields[b"bc"] == b"8801234567890\xff\xfe"
    finally:
        r.close()


def test_replay_never_writes_outside_the_shard_streams(settings: Settings) -> None:
    entry_id = _dead_letter(settings, "T-x", reason="max deliveries", shard=99)
    outcome = dlq.replay_dlq(settings, ids=[entry_id], force=True)
    assert not outcome.replayed and "not one of this pipeline's shards" in outcome.skipped[0][1]


def test_cli_list_replay_and_help(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    device = f"T-{uuid.uuid4().hex[:6]}"
    entry_id = _dead_letter(settings, device, reason=UNKNOWN.format(device))
    runner = CliRunner()

    listed = runner.invoke(dlq_app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [x["id"] for x in json.loads(listed.output)] == [entry_id]

    shown = runner.invoke(dlq_app, ["show", entry_id])
    assert shown.exit_code == 0 and json.loads(shown.output)["device_id"] == device

    refused = runner.invoke(dlq_app, ["replay", "--all"])
    assert refused.exit_code == 2 and "no center mapping" in refused.output

    nothing = runner.invoke(dlq_app, ["replay"])
    assert nothing.exit_code != 0

    _map(settings, device)
    done = runner.invoke(dlq_app, ["replay", entry_id, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["replayed"][0]["id"] == entry_id

    helped = runner.invoke(dlq_app, ["--help"])
    assert helped.exit_code == 0 and "barcode-events.dlt" in helped.output

    # The CLI reads the shared DLT: one record of this test's own, found by its time and reason.
    since = int(time.time() * 1000) - 1
    reason = f"undecodable JSON: cli test {uuid.uuid4().hex[:8]}"
    _to_dlt(settings, names.DLT_TOPIC, [(b"cli-test", b"\xff cli test", reason)])
    dlt = runner.invoke(
        dlq_app, ["list", "--source", "dlt", "--json", "--since", str(since), "--reason", reason]
    )
    assert dlt.exit_code == 0, dlt.output
    listed_dlt = json.loads(dlt.output)
    assert [(x["source"], x["reason"], x["origin"]) for x in listed_dlt] == [
        ("dlt", reason, "barcode-events/3/42")
    ]


# ---------------------------------------------------------------------------------------- DLT
@pytest.fixture
def topics(stack_settings: Settings) -> tuple[str, str]:
    """A private DLT and main topic for one test."""
    tag = uuid.uuid4().hex[:8]
    dlt, main = f"bp-test-dlt-{tag}", f"bp-test-main-{tag}"
    admin = kafka_adapter.admin(stack_settings)
    for fut in admin.create_topics([NewTopic(dlt, 1, 1), NewTopic(main, 1, 1)]).values():
        fut.result(15)
    return dlt, main


def _to_dlt(settings: Settings, topic: str, records: list[tuple[bytes, bytes, str]]) -> None:
    p = Producer(kafka_adapter.producer_config(settings))
    origin = (names.DLT_ORIGIN_HEADER, b"barcode-events/3/42")
    for key, value, reason in records:
        p.produce(topic, value, key=key, headers=[(names.DLT_REASON_HEADER, reason.encode()), origin])
    assert p.flush(10) == 0


def test_dlt_list_show_and_replay_of_valid_records(stack_settings: Settings, topics: tuple[str, str]) -> None:
    dlt, main = topics
    valid = {"barcode": "8800000000001", "deviceId": "SEOUL-CENTER-PC-001", "scanTime": 1795600000000,
             "scanId": f"dlt-{uuid.uuid4().hex[:6]}"}  # fmt: skip
    _to_dlt(stack_settings, dlt, [
        (b"SEOUL-CENTER-PC-001", orjson.dumps(valid), "invalid scanTime: an older rule"),
        (b"k", b"\xff not json", "undecodable JSON: unexpected character"),
    ])  # fmt: skip

    letters = dlt_store.read_dlt(stack_settings, topic=dlt)
    assert [x.id for x in letters] == ["0:0", "0:1"]
    assert letters[0].scan_id == valid["scanId"] and letters[0].origin == "barcode-events/3/42"
    assert letters[1].reason.startswith("undecodable JSON")
    assert dlt_store.get_dlt(stack_settings, "0:1", topic=dlt) == letters[1]
    assert dlt_store.get_dlt(stack_settings, "0:7", topic=dlt) is None

    outcome = dlt_store.replay_dlt(stack_settings, everything=True, topic=dlt, target=main)
    assert [i for i, _ in outcome.replayed] == ["0:0"]
    assert outcome.skipped[0][0] == "0:1" and "still invalid" in outcome.skipped[0][1]

    c = Consumer(kafka_adapter.consumer_config(stack_settings, f"t-{uuid.uuid4().hex}"))
    try:
        c.assign([TopicPartition(main, 0, 0)])
        msg = None
        for _ in range(40):
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                break
        assert msg is not None and msg.error() is None
        assert orjson.loads(msg.value() or b"") == valid and msg.key() == b"SEOUL-CENTER-PC-001"
        assert dict(msg.headers() or [])[names.DLT_REPLAYED_FROM_HEADER] == f"{dlt}/0/0".encode()
    finally:
        c.close()
