"""``bench vegeta``: single-scan ingest latency measured by an independent open-loop load tool.

Why a second client: every other figure comes from our own load generator, so a flaw in it would
hide in every table. vegeta (installed by the project's setup from the Go module proxy) is a
widely used open-loop HTTP load tool: it sends at a fixed rate whatever the server does, and its
own ``report`` gives the latency figures quoted here. While it runs, the processor and workers
persist everything; afterwards every scan vegeta saw acknowledged is looked up in the database.

Each rate gets its own targets file of unique, valid scans (scanTime = when the file was made), so
the pipeline stores every one instead of deduplicating a repeated body.

Then the floors at the same rates, on the same machine and while the same services run: vegeta
against a trivial endpoint that answers at once (what the client, the kernel and an HTTP round
trip cost here) and a bare Kafka produce round trip. The ingest latency minus both is what the
service itself adds.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from barcode_harness.bench import report
from barcode_harness.bench.ceilings import drop_probe_topic, kafka_produce_latency
from barcode_harness.bench.env import BenchRun
from barcode_harness.bench.specs import VegetaSpec
from barcode_harness.bench.trivial_server import TrivialServerProcess
from barcode_harness.bench.vegeta_render import markdown
from barcode_harness.bench.warmup import warm_until_steady
from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, counter_scan_ids, encode_scan
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.errors import MissingPrerequisite
from barcode_pipeline.ops.verify import verify_scan_ids

log = logging.getLogger(__name__)


def vegeta_binary() -> str:
    """The vegeta executable: on PATH, or where the project's setup puts it (the venv's bin)."""
    found = shutil.which("vegeta") or shutil.which("vegeta", path=str(Path(".venv/bin").resolve()))
    if not found:
        raise MissingPrerequisite(
            "vegeta is not installed; run `make setup` (it installs it with `go install`)"
        )
    return found


def vegeta_version(binary: str) -> str:
    """vegeta's version: its own ``-version``, or, for a ``go install`` build (which leaves that empty),
    the module version recorded in the binary."""
    own = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False).stdout
    for line in own.splitlines():
        if line.startswith("Version:") and line.split(":", 1)[1].strip():
            return line.split(":", 1)[1].strip()
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go:
        info = subprocess.run(
            [go, "version", "-m", binary], capture_output=True, text=True, check=False
        ).stdout
        for line in info.splitlines():
            parts = line.split()
            if parts[:2] == ["mod", "github.com/tsenart/vegeta/v12"] and len(parts) > 2:
                return parts[2]
    return "unknown"


def write_targets(path: Path, url: str, count: int, token: str, headers: dict[str, str]) -> None:
    """``count`` vegeta JSON targets, each a unique valid scan of a seeded device."""
    factory = ScanFactory(
        SEEDED_DEVICES,
        barcodes=BarcodeFactory(seed=int(token, 16)),
        scan_ids=counter_scan_ids(f"vg-{token}-"),
    )
    header = {"Content-Type": ["application/json"], **{k: [v] for k, v in headers.items()}}
    with path.open("wb") as out:
        for _ in range(count):
            body = base64.b64encode(encode_scan(factory.next())).decode()
            out.write(orjson.dumps({"method": "POST", "url": url, "body": body, "header": header}) + b"\n")


def attack(
    binary: str, targets: Path, rate: float, duration_s: float, timeout_s: float, results: Path
) -> None:
    """One open-loop run: ``rate`` requests/s for ``duration_s``, raw results kept in ``results``."""
    with results.open("wb") as out:
        subprocess.run(
            [binary, "attack", "-format=json", f"-targets={targets}", f"-rate={rate:g}/1s",
             f"-duration={duration_s:g}s", f"-timeout={timeout_s:g}s", "-keepalive=true"],
            stdout=out, check=True, timeout=duration_s + timeout_s + 60,
        )  # fmt: skip


def vegeta_report(binary: str, results: Path) -> dict[str, Any]:
    """vegeta's own summary of a run (latencies in ns, status codes, success ratio)."""
    done = subprocess.run(
        [binary, "report", "-type=json", str(results)], capture_output=True, check=True, timeout=120
    )
    parsed: dict[str, Any] = orjson.loads(done.stdout)
    return parsed


def acknowledged_ids(binary: str, results: Path) -> list[str]:
    """The scanIds of the requests vegeta saw answered 202 (from the response bodies it kept)."""
    done = subprocess.run(
        [binary, "encode", "--to", "json", str(results)], capture_output=True, check=True, timeout=300
    )
    ids: list[str] = []
    for line in done.stdout.splitlines():
        result = orjson.loads(line)
        if result.get("code") == 202 and result.get("body"):
            ids.append(str(orjson.loads(base64.b64decode(result["body"]))["scanId"]))
    return ids


def measure_floors(
    settings: HarnessSettings,
    spec: VegetaSpec,
    binary: str,
    work: Path,
    headers: dict[str, str],
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Per rate: vegeta against the trivial endpoint, then a bare produce round trip at that rate."""
    floors: list[dict[str, Any]] = []
    with TrivialServerProcess(processes=settings.ingest.processes) as trivial:
        for rate in spec.rates:
            targets_file = work / f"targets-floor-{rate:g}.json"
            results = work / f"results-floor-{rate:g}.bin"
            write_targets(targets_file, trivial.url + names.ROUTE_SCAN, int(rate * spec.floor_s) + 1,
                          secrets.token_hex(4), headers)  # fmt: skip
            say(f"floor {rate:g} req/s: trivial endpoint, then bare Kafka produce, {spec.floor_s:g} s each")
            attack(binary, targets_file, rate, spec.floor_s, spec.timeout_s, results)
            targets_file.unlink()
            floors.append({"rate": rate, "http": summary(vegeta_report(binary, results))})
    try:
        for floor in floors:
            produce = kafka_produce_latency(settings, rate=floor["rate"], duration_s=spec.floor_s)
            floor["produce"] = produce.latency
    finally:
        drop_probe_topic(settings)
    return floors


def latency_targets(runs: list[dict[str, Any]], floors: list[dict[str, Any]]) -> list[report.Target]:
    """The single-scan latency goals, from vegeta's figures and the floors of the same run."""
    by_rate = {r["target_rate"]: r for r in runs if r["label"] != "warm-up"}
    produce = {f["rate"]: f["produce"] for f in floors if "produce" in f}

    def p99(rate: float) -> float | None:
        return by_rate[rate]["p99_ms"] if rate in by_rate else None

    low = min(by_rate, default=None)
    gap = None
    if low is not None and low in produce:
        gap = by_rate[low]["p50_ms"] - produce[low]["p50_ms"]
    return [
        report.check("single-scan p99 at 2,000 req/s", p99(2000.0), "<=", 5, unit=" ms"),
        report.check("single-scan p99 at 3,000 req/s", p99(3000.0), "<=", 15, unit=" ms"),
        report.check(
            f"single-scan p50 at {low or 100:g} req/s minus the bare produce p50", gap, "<=", 0.5,
            unit=" ms", note="the trivial endpoint's p50 at that rate is in the floors table",
        ),
    ]  # fmt: skip


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run in ms, as vegeta computed them."""
    lat = raw["latencies"]
    return {
        "requests": raw["requests"],
        "rate": round(raw["rate"], 1),
        "success": raw["success"],
        "status_codes": raw["status_codes"],
        "mean_ms": round(lat["mean"] / 1e6, 3),
        "p50_ms": round(lat["50th"] / 1e6, 3),
        "p90_ms": round(lat["90th"] / 1e6, 3),
        "p99_ms": round(lat["99th"] / 1e6, 3),
        "max_ms": round(lat["max"] / 1e6, 3),
        "errors": raw.get("errors") or [],
    }


def run_vegeta(
    spec: VegetaSpec,
    run: BenchRun,
    *,
    headers: dict[str, str] | None = None,  # beyond the bench's key
) -> dict[str, Any]:
    """Warm up, then one vegeta run per rate; write ``vegeta.json`` and ``vegeta.md`` into ``out``."""
    say = report.progress_logger(__name__)
    out = run.out
    binary = vegeta_binary()
    version = vegeta_version(binary)
    work = out / "vegeta"
    work.mkdir(parents=True, exist_ok=True)
    rates: list[dict[str, Any]] = []
    with run.env(legacy=False) as env:
        env_info = report.environment(env.settings, {"spec": asdict(spec), "vegeta": version.strip()})
        url = env.ingest_url + names.ROUTE_SCAN
        sent_headers = {**client_headers(env.api_key), **(headers or {})}

        def one_rate(label: str, rate: float, seconds: float) -> dict[str, Any]:
            token = secrets.token_hex(4)
            file = label.replace("#", "-")
            targets, results = work / f"targets-{file}.json", work / f"results-{file}.bin"
            write_targets(targets, url, int(rate * seconds) + 1, token, sent_headers)
            say(f"vegeta {label}: {rate:g} req/s for {seconds:g} s")
            started = time.time()
            attack(binary, targets, rate, seconds, spec.timeout_s, results)
            figures = summary(vegeta_report(binary, results))
            drained = env.drain()
            check = verify_scan_ids(env.settings.db.url, acknowledged_ids(binary, results))
            figures.update(
                label=label.split("#")[0], target_rate=rate, started_at=started,
                drained_after_s=round(drained, 2), acknowledged=check.acknowledged, stored=check.stored,
                lost=check.missing, duplicate_rows=check.duplicate_rows,
            )  # fmt: skip
            rates.append(figures)
            targets.unlink()  # the raw results stay; the targets are only inputs (and large)
            say(f"  p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, lost {figures['lost']}")
            return figures

        if spec.warmup_s > 0:
            rounds = max(1, round(spec.warmup_s / spec.warmup_round_s))
            warm_until_steady(
                lambda i: float(one_rate(f"warm-up#{i + 1}", max(spec.rates), spec.warmup_round_s)["p99_ms"]),
                min(3, rounds),
                rounds,
            )
        for rate in spec.rates:
            one_rate(f"{rate:g}", rate, spec.duration_s)
        floors = measure_floors(env.settings, spec, binary, work, sent_headers, say)
    result = {
        "environment": report.finish_environment(env_info),
        "runs": rates,
        "floors": floors,
    }
    result["targets"] = [t.to_dict() for t in latency_targets(rates, floors)]
    report.write_json(out / "vegeta.json", result)
    (out / "vegeta.md").write_text(markdown(result))
    return result
