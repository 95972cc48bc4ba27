"""``bench auth``: what scanner authentication costs on the hot path, the same load with auth off and on.

End to end: ingest alone with ``BP_INGEST_AUTH=off`` then ``required``, alternating rounds to spread a
shared machine's noise over both; the medians of the rounds' p50 are compared. In process: the checks
alone, which is what the first figure should show."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from barcode_harness.bench.loadgen import LoadResult, LoadSpec, run_load
from barcode_harness.bench.specs import AuthBenchSpec
from barcode_harness.keys import with_harness_key
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.auth.guard import Authenticator, Principal
from barcode_pipeline.auth.keys import digest
from barcode_pipeline.auth.store import StoredKey
from barcode_pipeline.ingest.metrics import IngestMetrics
from barcode_pipeline.run.pipeline import running_pipeline
from barcode_pipeline.run.supervisor import ChildSpec

log = logging.getLogger(__name__)

MODES = ("off", "required")
TARGET_P50_MS = 0.05
_EPOCH = datetime(2026, 1, 1)  # created_at of the synthetic keys; never compared


def in_process_cost_us(calls: int) -> dict[str, float]:
    """Microseconds per request of the auth checks alone, for a key and for a trusted network: who it
    is, its devices and its rate limit (a rate it never reaches, so every call takes the whole path)."""
    secret = "bpk_" + "x" * 43
    settings = HarnessSettings(ingest_trusted_networks="127.0.0.0/8=SEOUL-*", ingest_key_rate=1e12)
    guard = Authenticator(settings, IngestMetrics(), load=list)
    others = [StoredKey(f"k{i}", digest(f"s{i}"), ("SEOUL-*",), _EPOCH, None) for i in range(200)]
    guard.replace_keys([*others, StoredKey("bench", digest(secret), ("SEOUL-CENTER-PC-*",), _EPOCH, None)])
    headers = [(b"host", b"127.0.0.1:8081"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {secret}".encode()), (b"content-length", b"90")]  # fmt: skip
    keyed = {"type": "http", "headers": headers, "client": ("127.0.0.1", 40000)}
    keyless = {"type": "http", "headers": headers[:2] + headers[3:], "client": ("127.0.0.1", 40000)}
    devices = ("SEOUL-CENTER-PC-001",)
    out = {}
    for name, scope in (("key", keyed), ("trusted_network", keyless)):
        started = time.perf_counter()
        for _ in range(calls):
            principal = guard.identify(scope)
            assert isinstance(principal, Principal)
            guard.forbidden(principal, devices, batch=False)
            guard.limit(principal, 1)
        out[f"{name}_us"] = round((time.perf_counter() - started) / calls * 1e6, 3)
    return out


def run_auth_bench(
    settings: HarnessSettings, spec: AuthBenchSpec, out: Path, *, start_stack: bool
) -> dict[str, Any]:
    keyed = with_harness_key(settings.updated({"ingest_auth": "required"}), "bench-auth",
                             start_stack=start_stack)  # fmt: skip
    load = LoadSpec(url=f"http://{settings.ingest.host}:{settings.ingest.port}", rate=spec.rate,
                    duration_s=spec.duration_s, api_key=keyed.ingest_api_key)  # fmt: skip
    results: dict[str, list[LoadResult]] = {m: [] for m in MODES}
    out.mkdir(parents=True, exist_ok=True)
    for round_no in range(spec.rounds):
        for mode in MODES if round_no % 2 == 0 else MODES[::-1]:
            ingest = ChildSpec("ingest", names.Role.INGEST, ["ingest"])
            with running_pipeline(keyed.updated({"ingest_auth": mode}), specs=[ingest], start_stack=False,
                                  log_path=out / "ingest.log"):  # fmt: skip
                run_load(replace(load, duration_s=spec.warmup_s))  # warm-up: connections, producer id, caches
                result = run_load(load)
            results[mode].append(result)
            log.info("round %d, auth %s: p50 %.3f ms, p99 %.3f ms, %d errors", round_no + 1, mode,
                     result.latency.p50_ms, result.latency.p99_ms,
                     result.errors + result.failures)  # fmt: skip
    p50 = {m: [r.latency.p50_ms for r in results[m]] for m in MODES}
    median = {m: statistics.median(p50[m]) for m in MODES}
    added = median["required"] - median["off"]
    micro = in_process_cost_us(spec.calls)
    return {
        "rate_per_s": spec.rate,
        "duration_s_per_round": spec.duration_s,
        "rounds": spec.rounds,
        "p50_ms_per_round": p50,
        "p99_ms_per_round": {m: [r.latency.p99_ms for r in results[m]] for m in MODES},
        "errors": {m: sum(r.errors + r.failures for r in results[m]) for m in MODES},
        "median_p50_ms": median,
        "added_p50_ms": round(added, 4),
        "in_process_auth_cost": micro,
        "target": f"auth adds at most {TARGET_P50_MS} ms to p50",
        "met_in_process": micro["key_us"] / 1000 <= TARGET_P50_MS,
        "met_end_to_end": added <= TARGET_P50_MS,
    }
