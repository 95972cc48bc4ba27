"""Scanner keys, device patterns, trusted networks and the rate limit as pure logic (no servers)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest
from starlette.responses import Response

from barcode_pipeline.auth.guard import (
    MALFORMED,
    MAX_KEY_BYTES,
    Authenticator,
    Principal,
    _presented_key,
)
from barcode_pipeline.auth.keys import check_name, digest, new_secret
from barcode_pipeline.auth.store import StoredKey
from barcode_pipeline.config import Settings, load_settings
from barcode_pipeline.domain.devices import DevicePatterns, parse_patterns
from barcode_pipeline.domain.networks import NetworkTable, parse_trusted_networks
from barcode_pipeline.errors import ConfigError
from barcode_pipeline.ingest.metrics import IngestMetrics


def test_secrets_are_random_prefixed_and_stored_only_as_their_digest() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.startswith("bpk_") and len(a) >= 40
    assert digest(a) == digest(a.encode()) and len(digest(a)) == 64 and a not in digest(a)


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "semi;colon", "star*"])
def test_bad_key_names_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_name(bad)


def test_device_patterns_are_globs_on_device_id() -> None:
    patterns = DevicePatterns(parse_patterns("SEOUL-CENTER-PC-*, BUSAN-PC-0?"))
    assert patterns.allows("SEOUL-CENTER-PC-001")
    assert patterns.allows("BUSAN-PC-07")
    assert not patterns.allows("BUSAN-PC-007")
    assert not patterns.allows("XSEOUL-CENTER-PC-001")
    assert not patterns.allows("SEOUL-CENTER-PC")
    assert DevicePatterns(("*",)).allows("anything")
    for bad in ("", " , ", "A;DROP", "[abc]", "A B"):
        with pytest.raises(ConfigError):
            parse_patterns(bad)


def test_trusted_networks_parse_and_match_loopback() -> None:
    table = NetworkTable(parse_trusted_networks("10.20.0.0/16=SEOUL-*; 127.0.0.0/8=LEGACY-*,OLD-?"))
    assert table.lookup("127.0.0.1") == 1
    assert table.lookup("::ffff:127.0.0.1") == 1  # an IPv4 client on a dual-stack socket
    assert table.lookup("10.20.3.4") == 0
    assert table.lookup("10.21.0.1") is None
    assert table.lookup("::1") is None
    assert table.lookup("testclient") is None
    for bad in ("127.0.0.1/8=*", "10.0.0.0/8", "nonsense=*", "10.0.0.0/8=a b"):
        with pytest.raises(ConfigError):
            parse_trusted_networks(bad)


def test_a_bad_trusted_network_setting_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BP_INGEST_TRUSTED_NETWORKS", "300.0.0.0/8=*")
    with pytest.raises(ConfigError, match=r"BP_INGEST_TRUSTED_NETWORKS: .*300\.0\.0\.0/8"):
        load_settings()


def test_the_key_comes_from_bearer_or_x_api_key() -> None:
    assert _presented_key([(b"authorization", b"Bearer abc")]) == b"abc"
    assert _presented_key([(b"authorization", b"bearer  abc ")]) == b"abc"
    assert _presented_key([(b"x-api-key", b"k1")]) == b"k1"
    assert _presented_key([(b"content-type", b"application/json")]) is None
    # a key header without a usable key is malformed, never "no key" (a trusted network would admit it)
    for bad in (b"Basic dXNlcg==", b"Bearer ", b"Bearer", b"Bearer\tabc", b"Bearer " + b"k" * 129):
        assert _presented_key([(b"authorization", bad)]) == MALFORMED, bad
    assert _presented_key([(b"x-api-key", b" ")]) == MALFORMED
    two = [(b"authorization", b"Bearer abc"), (b"x-api-key", b"other")]
    assert _presented_key(two) == MALFORMED  # two different keys: neither is believed
    assert _presented_key([(b"authorization", b"Bearer abc"), (b"x-api-key", b"abc")]) == b"abc"
    assert _presented_key([(b"authorization", b"Bearer " + b"k" * MAX_KEY_BYTES)]) == b"k" * MAX_KEY_BYTES


def _scope(headers: list[tuple[bytes, bytes]], client: str = "127.0.0.1") -> dict[str, object]:
    return {"type": "http", "headers": headers, "client": (client, 40000)}


def _name(answer: Principal | Response) -> str:
    assert isinstance(answer, Principal), answer
    return answer.name


def test_a_malformed_key_is_refused_even_from_a_trusted_network() -> None:
    settings = Settings(ingest_auth="required", ingest_trusted_networks="127.0.0.0/8=*")
    guard = Authenticator(settings, IngestMetrics(), load=list)
    guard.replace_keys([])
    assert isinstance(guard.identify(_scope([])), Principal)  # no key header: the network admits it
    refused = guard.identify(_scope([(b"authorization", b"Bearer ")]))
    assert isinstance(refused, Response) and refused.status_code == 401
    assert b"malformed" in refused.body or b"one key" in refused.body


def test_a_refresh_that_fails_in_any_way_keeps_the_keys_and_the_loop() -> None:
    calls = 0

    def load() -> list[StoredKey]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise FileNotFoundError("ca.pem")  # not one of ours: it used to end the loop for good
        return [_stored("a", "sa", ("*",), revoked=calls >= 3)]

    metrics = IngestMetrics()
    guard = Authenticator(Settings(ingest_auth="required"), metrics, load=load)
    asyncio.run(guard.refresh())
    assert _name(guard.identify(_scope([(b"authorization", b"Bearer sa")]))) == "a"
    asyncio.run(guard.refresh())  # fails: the last loaded set stays in force
    assert _name(guard.identify(_scope([(b"authorization", b"Bearer sa")]))) == "a"
    asyncio.run(guard.refresh())  # the next one takes the revocation
    revoked = guard.identify(_scope([(b"authorization", b"Bearer sa")]))
    assert isinstance(revoked, Response) and revoked.status_code == 401
    assert metrics.keys_count._value.get() == 1 and metrics.keys_loaded_at._value.get() > 0


def _stored(name: str, secret: str, patterns: tuple[str, ...], revoked: bool = False) -> StoredKey:
    now = datetime(2026, 1, 1)
    return StoredKey(name, digest(secret), patterns, now, now if revoked else None)


def test_reloading_keys_keeps_the_state_of_unchanged_ones() -> None:
    guard = Authenticator(Settings(ingest_key_rate=5), IngestMetrics(), load=list)
    guard.replace_keys([_stored("a", "sa", ("*",)), _stored("b", "sb", ("B-*",)), _stored("c", "sc", ("*",))])
    before = {e.principal.name: e.principal for e in guard._by_digest.values()}
    c_faster = _stored("c", "sc", ("*",))
    c_faster = StoredKey(c_faster.name, c_faster.digest, c_faster.patterns, c_faster.created_at, None, 50)
    guard.replace_keys([_stored("a", "sa", ("*",)), _stored("b", "sb", ("B-1",)), c_faster])
    after = {e.principal.name: e.principal for e in guard._by_digest.values()}
    assert after["a"] is before["a"] and after["a"].rate == 5  # the default rate
    assert after["b"] is not before["b"] and after["b"].patterns.patterns == ("B-1",)
    assert after["c"].rate == 50  # its own rate, from the table


def test_keys_older_than_the_limit_get_503_until_a_reload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past BP_INGEST_KEYS_MAX_AGE_S a revoked key could still pass: keyed requests get 503."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the guard calls time.monotonic()
    settings = Settings(ingest_auth="required", ingest_keys_max_age_s=60)
    guard = Authenticator(settings, IngestMetrics(), load=lambda: [_stored("a", "sa", ("*",))])
    asyncio.run(guard.refresh())
    keyed = _scope([(b"authorization", b"Bearer sa")])
    now[0] += 59
    assert _name(guard.identify(keyed)) == "a"
    now[0] += 2
    stale = guard.identify(keyed)
    assert isinstance(stale, Response) and stale.status_code == 503 and b"reloaded" in stale.body
    asyncio.run(guard.refresh())  # the database answers again
    assert _name(guard.identify(keyed)) == "a"
