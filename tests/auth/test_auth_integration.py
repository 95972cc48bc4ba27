"""Scanner authentication against the real stack: keys in MariaDB, ingest in process and as a real server."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from barcode_pipeline import names
from barcode_pipeline.adapters.redis import client as redis_client
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.auth.ratelimit import Delta, RateLimiter
from barcode_pipeline.auth.store import create_key, load_keys, revoke_key
from barcode_pipeline.cli import app as cli_app
from barcode_pipeline.config import Settings
from barcode_pipeline.ingest.app import create_app
from tests.conftest import LOOPBACK_CLIENT
from tests.ingest.conftest import TopicReader, scan
from tests.ingest.test_server import CLIENT_TIMEOUT_S, running_server

pytestmark = pytest.mark.integration

REVOCATION_BOUND_S = 5.0  # the promise: a revoked key is refused everywhere within this


@pytest.fixture
def tag() -> str:
    """A per-test device prefix and key-name stem, so tests never see each other's keys."""
    return f"AUTH{uuid.uuid4().hex[:8].upper()}"


@pytest.fixture
def keyed(stack_settings: Settings, ingest_key: str, tag: str) -> dict[str, str]:
    """Two keys: one for the tag's SEOUL devices only, one revoked."""
    db = stack_settings.db.url
    seoul = create_key(db, f"{tag}-seoul", f"{tag}-SEOUL-*")
    revoked = create_key(db, f"{tag}-gone", "*")
    revoke_key(db, f"{tag}-gone")
    return {"seoul": seoul, "revoked": revoked}


@pytest.fixture
def auth_app(stack_settings: Settings, keyed: dict[str, str]) -> Iterator[TestClient]:
    """An ingest app with auth required (the default), started after the keys exist."""
    with TestClient(
        create_app(stack_settings), raise_server_exceptions=False, client=LOOPBACK_CLIENT
    ) as client:
        yield client


def _post(client: TestClient, path: str, body: Any, **headers: str) -> httpx.Response:
    return client.post(path, content=orjson.dumps(body), headers=headers)


def _after(started: float, seconds: float) -> None:
    """Block until ``seconds`` after ``started`` (the promise's deadline, not a guess at a delay)."""
    time.sleep(max(0.0, started + seconds - time.monotonic()))


def test_keys_cli_prints_the_secret_once_and_never_lists_it(stack_settings: Settings, tag: str) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli_app, ["keys", "create", "--name", f"{tag}-cli", "--devices", "A-*,B-?", "--rate", "250"]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert secret.startswith("bpk_")
    listed = runner.invoke(cli_app, ["keys", "list"])
    assert listed.exit_code == 0 and f"{tag}-cli" in listed.output and "A-*,B-?" in listed.output
    assert secret not in listed.output
    stored = {k.name: k for k in load_keys(stack_settings.db.url)}[f"{tag}-cli"]
    assert secret not in stored.digest and not stored.revoked and stored.rate == 250
    negative = runner.invoke(
        cli_app, ["keys", "create", "--name", f"{tag}-neg", "--devices", "*", "--rate", "-1"]
    )
    assert negative.exit_code == 2 and "--rate" in negative.output  # a usage error naming the option
    again = runner.invoke(cli_app, ["keys", "create", "--name", f"{tag}-cli", "--devices", "*"])
    assert again.exit_code == 1 and "exists already" in str(again.exception)
    assert runner.invoke(cli_app, ["keys", "revoke", f"{tag}-cli"]).exit_code == 0
    assert {k.name: k for k in load_keys(stack_settings.db.url)}[f"{tag}-cli"].revoked
    missing = runner.invoke(cli_app, ["keys", "revoke", f"{tag}-nope"])
    assert missing.exit_code == 1 and "no key named" in str(missing.exception)
    bad = runner.invoke(cli_app, ["keys", "create", "--name", f"{tag}-x", "--devices", "a b"])
    assert bad.exit_code == 1 and "device pattern" in str(bad.exception)


def _key_scans(app: TestClient, key: str) -> float:
    """bp_ingest_key_scans_total of ``key`` (0 before its first scan)."""
    prefix = f'bp_ingest_key_scans_total{{key="{key}"}} '
    lines = [line for line in app.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def _read_after_witness(
    app: TestClient, keyed: dict[str, str], tag: str, topic_reader: TopicReader
) -> set[str]:
    """What reached Kafka since the mark, read until an accepted witness scan sent last shows up
    (confirmed before its 202), then every partition to its end: a refused request's record would
    be there by then, on whichever partition its device maps to; an empty read of a topic not yet
    caught up proves nothing."""
    witness = scan(deviceId=f"{tag}-SEOUL-999")
    assert _post(app, "/ingest/barcode", witness, Authorization=f"Bearer {keyed['seoul']}").status_code == 202
    seen = set(topic_reader.read(want={witness["scanId"]}))
    assert witness["scanId"] in seen
    return seen | set(topic_reader.read())


def test_missing_unknown_and_revoked_keys_are_401_and_nothing_reaches_kafka(
    auth_app: TestClient, keyed: dict[str, str], tag: str, topic_reader: TopicReader
) -> None:
    body = scan(deviceId=f"{tag}-SEOUL-001")
    cases = {
        "missing": {},
        "unknown": {"Authorization": "Bearer bpk_not-a-key"},
        "revoked": {"Authorization": f"Bearer {keyed['revoked']}"},
        "unknown x-api-key": {"X-API-Key": "nope"},
        "other scheme": {"Authorization": f"Basic {keyed['seoul']}"},
        "empty bearer": {"Authorization": "Bearer "},
        "two keys": {"Authorization": f"Bearer {keyed['seoul']}", "X-API-Key": keyed["revoked"]},
    }
    sent = []
    for case, headers in cases.items():
        for path, payload in (("/ingest/barcode", body), ("/ingest/barcodes", [body])):
            response = _post(auth_app, path, payload, **headers)
            assert response.status_code == 401, (case, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer realm=")
            assert response.json()["error"] == "unauthorized"
            sent.append(body["scanId"])
    assert not set(sent) & _read_after_witness(auth_app, keyed, tag, topic_reader)
    metrics = auth_app.get("/metrics").text
    for reason in ("missing", "unknown", "revoked", "malformed"):
        assert f'bp_ingest_auth_failures_total{{reason="{reason}"}}' in metrics
    assert keyed["revoked"] not in metrics and keyed["seoul"] not in metrics


def test_a_key_sends_only_for_its_devices_and_a_batch_names_the_index(
    auth_app: TestClient, keyed: dict[str, str], tag: str, topic_reader: TopicReader
) -> None:
    counted = _key_scans(auth_app, f"{tag}-seoul")  # the module's app: earlier tests' witnesses count too
    ok = scan(deviceId=f"{tag}-SEOUL-001")
    assert _post(auth_app, "/ingest/barcode", ok, Authorization=f"Bearer {keyed['seoul']}").status_code == 202
    also_ok = scan(deviceId=f"{tag}-SEOUL-002")
    response = _post(auth_app, "/ingest/barcode", also_ok, **{"X-API-Key": keyed["seoul"]})
    assert response.status_code == 202
    outside = scan(deviceId=f"{tag}-BUSAN-001")
    response = _post(auth_app, "/ingest/barcode", outside, Authorization=f"Bearer {keyed['seoul']}")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden" and response.json()["field"] == "deviceId"
    assert f"{tag}-seoul" in response.json()["message"]  # the key's name, never its secret
    batch = [scan(deviceId=f"{tag}-SEOUL-003"), scan(deviceId=f"{tag}-SEOUL-004"), outside]
    response = _post(auth_app, "/ingest/barcodes", batch, Authorization=f"Bearer {keyed['seoul']}")
    assert response.status_code == 403, response.text
    assert response.json()["index"] == 2
    seen = topic_reader.read(want={ok["scanId"], also_ok["scanId"]})
    assert {ok["scanId"], also_ok["scanId"]} <= set(seen)
    # the whole batch was refused
    assert not {s["scanId"] for s in batch} & _read_after_witness(auth_app, keyed, tag, topic_reader)
    assert _key_scans(auth_app, f"{tag}-seoul") == counted + 3  # two scans and the witness; no refused one
    metrics = auth_app.get("/metrics").text
    assert 'bp_ingest_auth_failures_total{reason="forbidden_device"}' in metrics
    assert keyed["seoul"] not in metrics


def test_new_and_revoked_keys_take_effect_without_a_restart(
    auth_app: TestClient, stack_settings: Settings, tag: str
) -> None:
    secret = create_key(stack_settings.db.url, f"{tag}-late", "*")  # after the app loaded its keys
    created = time.monotonic()

    def send() -> int:
        body = scan(deviceId=f"{tag}-X")
        return _post(auth_app, "/ingest/barcode", body, Authorization=f"Bearer {secret}").status_code

    _after(created, REVOCATION_BOUND_S)
    assert send() == 202, "a new key was not picked up"
    revoke_key(stack_settings.db.url, f"{tag}-late")
    revoked = time.monotonic()
    _after(revoked, REVOCATION_BOUND_S)
    assert send() == 401, "a revoked key was still accepted"


def test_rate_limit_counts_scans_and_answers_429_with_retry_after(
    make_settings: Callable[..., Settings], keyed: dict[str, str], tag: str, topic_reader: TopicReader
) -> None:
    """1.5 scans/s over 2 s windows: three scans a window, a batch counting as its scans."""
    settings = make_settings(ingest_key_rate=1.5, ingest_key_window_s=2.0)
    with TestClient(create_app(settings), raise_server_exceptions=False, client=LOOPBACK_CLIENT) as client:
        auth = {"Authorization": f"Bearer {keyed['seoul']}"}
        batch = [scan(deviceId=f"{tag}-SEOUL-1") for _ in range(2)]
        singles = [scan(deviceId=f"{tag}-SEOUL-1") for _ in range(3)]
        while time.time() % 2.0 > 0.3:  # all of it early in one window, so none of it is in two
            time.sleep(0.02)
        assert _post(client, "/ingest/barcodes", batch, **auth).status_code == 200  # two scans
        statuses = [_post(client, "/ingest/barcode", body, **auth).status_code for body in singles]
        assert statuses == [202, 429, 429]  # 2 + 1 = 3: the limit; a request (not a batch) would pass
        limited = _post(client, "/ingest/barcodes", [scan(deviceId=f"{tag}-SEOUL-1")], **auth)
        assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert "429" in orjson.dumps(client.get("/openapi.json").json()["paths"]["/ingest/barcode"]).decode()
        time.sleep(int(limited.headers["retry-after"]))  # room again, for the witness
        seen = _read_after_witness(client, keyed, tag, topic_reader)
    assert {b["scanId"] for b in batch + singles[:1]} <= seen  # the reader sees this app's records...
    assert not {b["scanId"] for b in singles[1:]} & seen  # ...and none of the refused ones


def test_rate_limit_holds_across_processes_through_redis(stack_settings: Settings, tag: str) -> None:
    """Two limiters (two processes, or hosts) on one Redis admit one key's rate, not twice it."""
    rate, seconds = 20.0, 3.0

    async def offer(limiter: RateLimiter) -> int:
        admitted, end = 0, time.time() + seconds
        while time.time() < end:
            admitted += limiter.take(tag, rate, 1) == 0
            await asyncio.sleep(0.01)  # 100 scans/s offered by each
        return admitted

    written: dict[tuple[int, int], int] = {}  # (limiter, window) -> the count it last wrote to Redis

    def recorded(i: int, exchange: Callable[[list[Delta]], list[tuple[int, int]]]) -> Any:
        def exchange_and_record(deltas: list[Delta]) -> list[tuple[int, int]]:
            totals = exchange(deltas)  # raises when Redis did not take them: nothing recorded
            written.update({(i, d.window): d.own for d in deltas})
            return totals

        return exchange_and_record

    async def both() -> tuple[int, bool]:
        limiters = [RateLimiter(1.0, partial(redis_client, stack_settings)) for _ in range(2)]
        for i, limiter in enumerate(limiters):
            limiter.exchange = recorded(i, limiter.exchange)  # type: ignore[method-assign]
            limiter.start()
        counts = await asyncio.gather(*(offer(limiter) for limiter in limiters))
        for limiter in limiters:
            await limiter.stop()
        return sum(counts), all(limiter.shared for limiter in limiters)

    admitted, shared = asyncio.run(both())
    # one key's worth: rate x seconds plus one window (the quiet key's first), plus what the other
    # process admits in one sync; counted per process it would be about twice that (160)
    assert shared and rate * (seconds - 1) <= admitted <= rate * (seconds + 1) + 20, admitted
    # Every admitted scan was written to Redis, the last ones at stop. (Read back from Redis, the
    # earliest window's counter may be gone: it lives 3 windows after its last write, and a loaded
    # CI machine once took longer than that to get from the first window to this line.)
    assert sum(written.values()) == admitted
    last = max(window for _, window in written)
    held = redis_client(stack_settings).hvals(names.rate_limit_key(tag, last))
    assert sum(map(int, held)) == sum(n for (_, window), n in written.items() if window == last) > 0


def test_auth_off_admits_keyless_scans(make_settings: Callable[..., Settings]) -> None:
    with TestClient(
        create_app(make_settings(ingest_auth="off")), raise_server_exceptions=False, client=LOOPBACK_CLIENT
    ) as client:
        assert _post(client, "/ingest/barcode", scan()).status_code == 202
        assert "401" not in orjson.dumps(client.get("/openapi.json").json()["paths"]).decode()


def test_openapi_documents_the_key_and_its_answers(auth_app: TestClient) -> None:
    spec = auth_app.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    for path in ("/ingest/barcode", "/ingest/barcodes"):
        operation = spec["paths"][path]["post"]
        assert {"401", "403"} <= set(operation["responses"]) and len(operation["security"]) == 2


def test_real_server_trusts_loopback_and_revokes_on_every_process(
    stack_settings: Settings, tag: str, tmp_path: Path, topic_reader: TopicReader
) -> None:
    """Two server processes; keyless scans from the trusted loopback network; a revocation reaches both."""
    db = stack_settings.db.url
    secret = create_key(db, f"{tag}-srv", f"{tag}-*")
    log_path = tmp_path / "ingest.log"
    trusted = {"BP_INGEST_TRUSTED_NETWORKS": f"127.0.0.0/8={tag}-LEGACY-*"}
    with running_server(stack_settings, 2, log_path, extra_env=trusted) as server:

        def post(body: dict[str, Any], headers: dict[str, str]) -> int:
            # A fresh connection per request, so the kernel spreads them over both processes.
            url = f"{server.base_url}/ingest/barcode"
            return httpx.post(
                url, content=orjson.dumps(body), headers=headers, timeout=CLIENT_TIMEOUT_S
            ).status_code

        # The public Java scanner sends no auth header: admitted from the trusted network, for its devices.
        assert post(scan(deviceId=f"{tag}-LEGACY-PC-1"), {}) == 202
        refused = [scan(deviceId=f"{tag}-OTHER-1"), scan(deviceId=f"{tag}-LEGACY-PC-1")]
        assert post(refused[0], {}) == 403
        # A key presented from a trusted network must still be valid.
        assert post(refused[1], {"X-API-Key": "wrong"}) == 401
        auth = client_headers(secret)
        witness = scan(deviceId=f"{tag}-PC-witness")
        assert post(witness, auth) == 202  # confirmed by Kafka before its 202: read up to it
        assert witness["scanId"] in topic_reader.read(want={witness["scanId"]})
        assert not {r["scanId"] for r in refused} & set(topic_reader.read())  # every partition, to its end
        assert all(post(scan(deviceId=f"{tag}-PC-{i}"), auth) == 202 for i in range(10))

        revoke_key(db, f"{tag}-srv")
        revoked_at = time.monotonic()

        _after(revoked_at, REVOCATION_BOUND_S)
        assert {post(scan(deviceId=f"{tag}-PC-1"), auth) for _ in range(12)} == {401}
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=CLIENT_TIMEOUT_S).text
        # At least the 10 sent before the revocation (a few more may have passed while it spread).
        counted = re.search(rf'^bp_ingest_key_scans_total{{key="{tag}-srv"}} (\S+)$', metrics, re.MULTILINE)
        assert counted is not None and float(counted.group(1)) >= 10, metrics
        assert 'bp_ingest_key_scans_total{key="network:127.0.0.0/8"}' in metrics
    text = log_path.read_text()
    assert secret not in text and f"{tag}-srv" in text  # logs name the key, never the secret
