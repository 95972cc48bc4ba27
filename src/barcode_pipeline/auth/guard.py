"""The ingest side of scanner authentication: who is asking, may they send for these devices, how fast.

Each ingest process keeps every key in memory (a dict by digest) and reloads the table every
``ingest_auth_refresh_s`` in a thread, so the hot path never waits for the database and a
revocation reaches every process within one refresh. If the database is down the last loaded
keys stay in force for up to ``ingest_keys_max_age_s`` (revoked ones too: that is the limit's
price); past it, and in a process that never loaded them, keyed requests get 503 (resend).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Scope

from barcode_pipeline.adapters.redis import client as redis_client
from barcode_pipeline.auth.keys import digest
from barcode_pipeline.auth.ratelimit import RateLimiter, retry_after
from barcode_pipeline.auth.store import StoredKey, load_keys
from barcode_pipeline.config import Settings
from barcode_pipeline.domain.devices import DevicePatterns
from barcode_pipeline.domain.networks import NetworkTable, parse_trusted_networks
from barcode_pipeline.web.contract import error_response, unavailable


class AuthMetrics(Protocol):
    """What the guard counts; the ingest's metrics provide it (the guard sits below the ingest)."""

    def auth_failed(self, reason: str) -> None: ...

    def key_accepted(self, key: str, count: int) -> None: ...

    def keys_loaded(self, count: int) -> None: ...

    def rate_limits_shared(self, shared: bool) -> None: ...


log = logging.getLogger(__name__)

REALM = "barcode-pipeline ingest"
CHALLENGE = f'Bearer realm="{REALM}"'
_LOG_EVERY_S = 10.0  # one log line per (reason, who) per this many seconds: a flood must not flood the log
# Our keys are 47 bytes; a longer value is refused before it is hashed (a 50 MB one cost ~70 ms of
# the event loop) or looked up.
MAX_KEY_BYTES = 128
MALFORMED = b""  # what _presented_key returns for a key header that carries no usable key


@dataclass(slots=True)
class Principal:
    """Who sent a request: a key (by name) or a trusted network. Never holds the secret."""

    name: str
    patterns: DevicePatterns
    rate: float = 0.0  # scans/s across the ingest (auth/ratelimit.py); 0: no limit
    any_device: bool = field(init=False)

    def __post_init__(self) -> None:
        self.any_device = "*" in self.patterns.patterns


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: str
    revoked: bool
    principal: Principal


OPEN = Principal("", DevicePatterns(("*",)))  # auth off: everyone, every device


class Authenticator:
    """Identifies, authorises and rate-limits requests; see the module docstring for the cache."""

    def __init__(
        self,
        settings: Settings,
        metrics: AuthMetrics,
        *,
        load: Callable[[], list[StoredKey]] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.required = settings.auth.mode == "required"
        self.refresh_s = settings.auth.refresh_s
        self._max_age_s = settings.auth.keys_max_age_s
        self._loaded_mono = 0.0  # time.monotonic() of the last successful load
        self._rate = settings.auth.key_rate
        self._limiter = limiter or RateLimiter(
            settings.auth.key_window_s, partial(_redis, settings), on_sync=metrics.rate_limits_shared
        )
        self._load = load or (lambda: load_keys(settings.db.url, timeout_s=min(3.0, self.refresh_s + 1)))
        self._metrics = metrics
        self._networks = NetworkTable(parse_trusted_networks(settings.auth.trusted_networks))
        self._network_principals = [
            Principal(n.name, p, self._rate)
            for n, p in zip(self._networks.networks, self._networks.patterns, strict=True)
        ]
        self._by_digest: dict[str, _Entry] = {}
        self.loaded = False
        self._task: asyncio.Task[None] | None = None
        self._logged: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ the cache
    def replace_keys(self, keys: Iterable[StoredKey]) -> None:
        """Swap in a freshly loaded key set; unchanged keys keep their principal."""
        old = {e.principal.name: e for e in self._by_digest.values()}
        fresh: dict[str, _Entry] = {}
        for key in keys:
            prev = old.get(key.name)
            if (
                prev is not None
                and prev.digest == key.digest
                and prev.principal.patterns.patterns == key.patterns
                and prev.principal.rate == self._rate_of(key)
            ):
                principal = prev.principal
            else:
                principal = Principal(key.name, DevicePatterns(key.patterns), self._rate_of(key))
            fresh[key.digest] = _Entry(key.digest, key.revoked, principal)
        self._by_digest = fresh  # one reference swap: the event loop never sees a half-built dict
        self._loaded_mono = time.monotonic()
        self.loaded = True

    def _rate_of(self, key: StoredKey) -> float:
        return self._rate if key.rate is None else key.rate

    async def refresh(self) -> None:
        """Reload the keys; on any failure keep the last set and try again next time. Any: a refresh
        loop ended by an unexpected error (a CA file missing mid-rotation) would keep revoked keys
        valid for good, silently."""
        try:
            keys = await asyncio.to_thread(self._load)
            self.replace_keys(keys)
            self._metrics.keys_loaded(len(self._by_digest))
        except Exception as exc:
            self._note("refresh", "db", "cannot reload scanner keys (keeping the last loaded set): %s", exc)

    async def start(self) -> None:
        """Load the keys once (bounded), then keep reloading them in the background."""
        if not self.required:
            log.warning("BP_INGEST_AUTH=off: ingest accepts scans from anyone who can reach it")
            return
        self._metrics.rate_limits_shared(True)  # until a sync says otherwise (none without traffic)
        self._limiter.start()
        await self.refresh()
        if self.loaded:
            log.info("scanner keys loaded: %d", len(self._by_digest))
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.required:
            await self._limiter.stop()

    # ------------------------------------------------------------------ the hot path
    def identify(self, scope: Scope) -> Principal | Response:
        """The request's principal, or the 401/503 to answer instead."""
        if not self.required:
            return OPEN
        presented = _presented_key(scope["headers"])
        if presented == MALFORMED:
            return self._unauthorized(
                "malformed", "", "send one key, as Authorization: Bearer <key> or X-API-Key", invalid=True
            )
        if presented is None:
            client = scope.get("client")
            index = self._networks.lookup(client[0]) if client else None
            if index is None:
                return self._unauthorized(
                    "missing", "", "an API key is required (Authorization: Bearer <key>)"
                )
            principal = self._network_principals[index]
        else:
            if not self.loaded:
                self._metrics.auth_failed("not_loaded")
                return unavailable("scanner keys are not loaded yet (database unreachable)")
            if self._max_age_s and time.monotonic() - self._loaded_mono > self._max_age_s:
                self._metrics.auth_failed("stale")  # a revoked key could pass: fail safe
                return unavailable("scanner keys could not be reloaded for too long (database unreachable)")
            wanted = digest(presented)
            entry = self._by_digest.get(wanted)
            if entry is None or not hmac.compare_digest(entry.digest, wanted):
                return self._unauthorized("unknown", "", "unknown API key", invalid=True)
            if entry.revoked:
                return self._unauthorized(
                    "revoked", entry.principal.name, "this API key was revoked", invalid=True
                )
            principal = entry.principal
        # A key already over its rate is refused before its body is read (scans=0: nothing charged)
        refused = self.limit(principal, 0)
        return principal if refused is None else refused

    def limit(self, principal: Principal, scans: int) -> Response | None:
        """429 if the principal is over its rate (the scans are charged otherwise), else None."""
        if not principal.rate:
            return None
        wait = self._limiter.take(principal.name, principal.rate, scans)
        if not wait:
            return None
        self._metrics.auth_failed("rate_limited")
        self._note("rate_limited", principal.name, "rate limit reached for %s", principal.name)
        return error_response(
            429,
            "rate_limited",
            f"rate limit of {principal.rate:g} scans/s reached",
            headers={"Retry-After": retry_after(wait)},
        )

    def forbidden(self, principal: Principal, device_ids: Iterable[str], batch: bool) -> Response | None:
        """403 naming the first scan whose deviceId the principal may not send for, else None."""
        if principal.any_device:
            return None
        allows = principal.patterns.allows
        for index, device_id in enumerate(device_ids):
            if not allows(device_id):
                self._metrics.auth_failed("forbidden_device")
                who = principal.name
                self._note("forbidden", who, "%s may not send for device %s", who, device_id)
                extra: dict[str, Any] = {"field": "deviceId"}
                if batch:
                    extra["index"] = index
                return error_response(
                    403, "forbidden", f"{who} may not send scans for deviceId {device_id!r}", **extra
                )
        return None

    def refund(self, principal: Principal, scans: int) -> None:
        """Scans charged to the rate but not taken by Kafka: the scanner resends them."""
        if principal.rate and scans:
            self._limiter.refund(principal.name, scans)

    def accepted(self, principal: Principal, scans: int) -> None:
        if principal.name:
            self._metrics.key_accepted(principal.name, scans)

    # ------------------------------------------------------------------ helpers
    def _unauthorized(self, reason: str, who: str, message: str, *, invalid: bool = False) -> Response:
        self._metrics.auth_failed(reason)
        self._note(reason, who, "rejected a request: %s key %s", reason, who or "-")
        challenge = f'{CHALLENGE}, error="invalid_token"' if invalid else CHALLENGE
        return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})

    def _note(self, reason: str, who: str, fmt: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged.get((reason, who), -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._logged[(reason, who)] = now
            log.warning(fmt, *args)


def _redis(settings: Settings) -> Any:
    """The rate limits' Redis client: short timeouts and no retries (each sync writes absolute
    counts, so the next one, 100 ms later, is the retry; a shutdown never waits out a backoff)."""
    return redis_client(settings, timeout=0.5, retries=0)


def _presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key of ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; None when neither header
    is sent; ``MALFORMED`` when one is sent without a usable key (empty, another scheme, over-long,
    two different keys). Never "no key" for those: a trusted network would admit them without one."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, space, token = value.partition(b" ")
            key = token.strip() if space and scheme.lower() == b"bearer" else MALFORMED
        elif name == b"x-api-key":
            key = value.strip()
        else:
            continue
        if not key or len(key) > MAX_KEY_BYTES or (found is not None and key != found):
            return MALFORMED
        found = key
    return found


def openapi_responses() -> dict[int | str, dict[str, object]]:
    """The OpenAPI entries of the answers authentication adds to the scan routes."""
    from barcode_pipeline.web import schemas
    from barcode_pipeline.web.contract import RETRY_AFTER_DOC

    return {
        401: {
            "model": schemas.ErrorBody,
            "description": "No API key, or an unknown or revoked one. Nothing was sent to Kafka.",
            "headers": {"WWW-Authenticate": {"description": CHALLENGE, "schema": {"type": "string"}}},
        },
        403: {
            "model": schemas.ErrorBody,
            "description": "The key may not send for this deviceId (`index` names the scan in a batch). "
            "Nothing was sent to Kafka.",
        },
        429: {
            "model": schemas.ErrorBody,
            "description": "The key's rate limit (scans/s) is reached; nothing was sent to Kafka. "
            "Resend after `Retry-After`.",
            "headers": RETRY_AFTER_DOC,
        },
    }
