"""``bench vegeta``: single-scan ingest latency measured by an independent open-loop load tool.

Every other figure comes from our own load generator, so a flaw in it would hide in every table. The
floors at the same rates (a trivial endpoint, a bare Kafka produce) show what the service itself adds.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from barcode_harness.bench import report
from barcode_harness.bench.ceilings import drop_probe_topic, kafka_produce_latency
from barcode_harness.bench.env import BenchRun
from barcode_harness.bench.specs import VegetaSpec
from barcode_harness.bench.trivial_server import TrivialServerProcess
from barcode_harness.bench.warmup import warm_for
from barcode_harness.scanner.barcodes import BarcodeFactory
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, counter_scan_ids, encode_scan
from barcode_harness.settings import HarnessSettings
from barcode_pipeline import names
from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.errors import MissingPrerequisite
from barcode_pipeline.ops.verify import verify_scan_ids

log = logging.getLogger(__name__)


def vegeta_binary() -> str:
    """The vegeta executable: on PATH, or where the project's setup puts it (the venv's bin, beside
    this interpreter, so any working directory finds it)."""
    found = shutil.which("vegeta") or shutil.which("vegeta", path=str(Path(sys.executable).parent))
    if not found:
        raise MissingPrerequisite(
            "vegeta is not installed; run `make setup` (it installs it with `go install`)"
        )
    return found


def vegeta_version(binary: str) -> str:
    """vegeta's own ``-version``, or the module version a ``go install`` build (version empty) records."""
    own = subprocess.run([binary, "-version"], capture_output=True, text=True, check=False).stdout
    if found := re.search(r"^Version:[ \t]*(\S+)", own, re.MULTILINE):
        return found[1]
    if go := shutil.which("go") or shutil.which("go", path="/usr/local/go/bin"):
        info = subprocess.run([go, "version", "-m", binary], capture_output=True, text=True, check=False)
        if found := re.search(r"^\s*mod\s+github\.com/tsenart/vegeta/v12\s+(\S+)", info.stdout, re.MULTILINE):
            return found[1]
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


def _output(*command: str, timeout: float) -> bytes:
    return subprocess.run(command, capture_output=True, check=True, timeout=timeout).stdout


def vegeta_report(binary: str, results: Path) -> dict[str, Any]:
    """vegeta's own summary of a run (latencies in ns, status codes, success ratio)."""
    return dict(orjson.loads(_output(binary, "report", "-type=json", str(results), timeout=120)))


def acknowledged_ids(binary: str, results: Path) -> list[str]:
    """The scanIds of the requests vegeta saw answered 202 (from the response bodies it kept)."""
    answers = map(
        orjson.loads, _output(binary, "encode", "--to", "json", str(results), timeout=300).splitlines()
    )
    return [str(orjson.loads(base64.b64decode(a["body"]))["scanId"]) for a in answers
            if a.get("code") == 202 and a.get("body")]  # fmt: skip


def attack_fresh(
    binary: str, work: Path, name: str, url: str, rate: float, seconds: float, timeout_s: float,
    headers: dict[str, str],
) -> tuple[Path, float]:  # fmt: skip
    """One run on its own unique scans (a repeated one is deduplicated): raw results, start time."""
    targets, results = work / f"targets-{name}.json", work / f"results-{name}.bin"
    write_targets(targets, url, int(rate * seconds) + 1, secrets.token_hex(4), headers)
    started = time.time()
    attack(binary, targets, rate, seconds, timeout_s, results)
    targets.unlink()  # the raw results stay; the targets are only inputs (and large)
    return results, started


def measure_floors(
    settings: HarnessSettings, spec: VegetaSpec, binary: str, work: Path, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Per rate: vegeta against the trivial endpoint, then a bare produce round trip at that rate."""
    floors: list[dict[str, Any]] = []
    with TrivialServerProcess(processes=settings.ingest.processes) as trivial:
        for rate in spec.rates:
            log.info(
                "floor %g req/s: trivial endpoint, then bare Kafka produce, %g s each", rate, spec.floor_s
            )
            results, _ = attack_fresh(binary, work, f"floor-{rate:g}", trivial.url + names.ROUTE_SCAN, rate,
                                      spec.floor_s, spec.timeout_s, headers)  # fmt: skip
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
    p99 = {rate: r["p99_ms"] for rate, r in by_rate.items()}
    low = min(by_rate, default=None)
    gap = by_rate[low]["p50_ms"] - produce[low]["p50_ms"] if low in produce else None
    return [
        report.check("single-scan p99 at 2,000 req/s", p99.get(2000.0), "<=", 5, unit=" ms"),
        report.check("single-scan p99 at 3,000 req/s", p99.get(3000.0), "<=", 15, unit=" ms"),
        report.check(
            f"single-scan p50 at {low or 100:g} req/s minus the bare produce p50", gap, "<=", 0.5,
            unit=" ms", note="the trivial endpoint's p50 at that rate is in the floors table",
        ),
    ]  # fmt: skip


_LATENCIES = (("mean", "mean"), ("p50", "50th"), ("p90", "90th"), ("p99", "99th"), ("max", "max"))


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run in ms, as vegeta computed them."""
    lat = raw["latencies"]
    return {
        "requests": raw["requests"],
        "rate": round(raw["rate"], 1),
        "success": raw["success"],
        "status_codes": raw["status_codes"],
        **{f"{name}_ms": round(lat[key] / 1e6, 3) for name, key in _LATENCIES},
        "errors": raw.get("errors") or [],
    }


def run_vegeta(spec: VegetaSpec, run: BenchRun) -> dict[str, Any]:
    """Warm up, then one vegeta run per rate; write ``vegeta.json`` and ``vegeta.md`` into ``out``."""
    say = report.progress_logger(__name__)
    binary = vegeta_binary()
    work = run.out / "vegeta"
    work.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    with run.started(spec, legacy=False) as (env, env_info):
        env_info["vegeta"] = vegeta_version(binary).strip()
        url = env.ingest_url + names.ROUTE_SCAN
        sent_headers = client_headers(env.api_key)

        def one_rate(label: str, rate: float, seconds: float) -> dict[str, Any]:
            say(f"vegeta {label}: {rate:g} req/s for {seconds:g} s")
            results, started = attack_fresh(binary, work, label.replace("#", "-"), url, rate, seconds,
                                            spec.timeout_s, sent_headers)  # fmt: skip
            figures = summary(vegeta_report(binary, results))
            drained = env.drain()
            check = verify_scan_ids(env.settings.db.url, acknowledged_ids(binary, results))
            figures.update(
                label=label.split("#")[0], target_rate=rate, started_at=started,
                drained_after_s=round(drained, 2), acknowledged=check.acknowledged, stored=check.stored,
                lost=check.missing, duplicate_rows=check.duplicate_rows,
            )  # fmt: skip
            runs.append(figures)
            say(f"  p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, lost {figures['lost']}")
            return figures

        if spec.warmup_s > 0:
            warm_for(
                lambda i: float(one_rate(f"warm-up#{i + 1}", max(spec.rates), spec.warmup_round_s)["p99_ms"]),
                spec.warmup_s,
                spec.warmup_round_s,
            )
        for rate in spec.rates:
            one_rate(f"{rate:g}", rate, spec.duration_s)
        floors = measure_floors(env.settings, spec, binary, work, sent_headers)
    result = {"environment": env_info, "runs": runs, "floors": floors}
    result["targets"] = [t.to_dict() for t in latency_targets(runs, floors)]
    return run.write("vegeta", result, markdown)


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    spec = env["spec"]
    head = ("run", "req/s sent", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "success", "codes",
            "acknowledged", "stored", "lost", "duplicate rows", "drained after s")  # fmt: skip
    rows = [
        [r["label"], r["rate"], r["mean_ms"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"],
         f"{r['success']:.4f}", ", ".join(f"{k}: {v}" for k, v in r["status_codes"].items()),
         r["acknowledged"], r["stored"], r["lost"], r["duplicate_rows"], r["drained_after_s"]]
        for r in result["runs"]
    ]  # fmt: skip
    intro = (
        f"Single-scan `POST /ingest/barcode` driven by **vegeta** ({env['vegeta'] or 'version unknown'}), an "
        f"independent open-loop load tool, at each rate for {spec['duration_s']:g} s while the processor and "
        "workers persist everything; latencies are vegeta's own `report`. The warm-up "
        f"(rounds of {spec.get('warmup_round_s', spec['warmup_s']):g} s at the highest rate until the p99 "
        f"stops falling, at most {spec['warmup_s']:g} s) opens connections and lets the broker's JIT "
        "compiler finish its request path (a fresh broker keeps compiling for about a minute of load, with "
        "a compile thread taking a core meanwhile); it is shown apart and not part of the comparison. "
        "Then every scan vegeta saw answered 202 is looked up in the database."
    )
    floors = floors_section(result, spec) if result.get("floors") else ""
    targets = "### Targets\n\n" + report.md_targets(result["targets"]) if result.get("targets") else ""
    sections = [intro, report.md_table(head, rows), floors, targets, report.md_environment(env)]
    quick = " (quick)" if spec["preset"] == "quick" else ""
    return report.md_document(f"bench vegeta: ingest latency by an independent client{quick}", sections)


def floors_section(result: dict[str, Any], spec: dict[str, Any]) -> str:
    """Ingest against what the machine costs anyway at the same rate, from the same run."""
    runs = {r["target_rate"]: r for r in result["runs"] if r["label"] != "warm-up"}
    head = ("req/s", "ingest p50 / p99 ms", "trivial endpoint p50 / p99 ms", "bare produce p50 / p99 ms",
            "ingest p50 − both floors ms")  # fmt: skip
    rows = []
    for floor in result["floors"]:
        run, http, produce = runs.get(floor["rate"]), floor["http"], floor.get("produce")
        ingest = f"{run['p50_ms']:.2f} / {run['p99_ms']:.2f}" if run else "–"
        bare = f"{produce['p50_ms']:.2f} / {produce['p99_ms']:.2f}" if produce else "–"
        left = run["p50_ms"] - http["p50_ms"] - produce["p50_ms"] if run and produce else None
        trivial = f"{http['p50_ms']:.2f} / {http['p99_ms']:.2f}"
        rows.append([f"{floor['rate']:g}", ingest, trivial, bare, left])
    return (
        "### Floors at the same rates\n\n"
        f"Measured right after the runs above, {spec.get('floor_s', 0):g} s per rate, while the same "
        "services ran: vegeta sending the same kind of request to a trivial endpoint that answers at once "
        "(a raw asyncio protocol with the C httptools parser, as many processes as ingest), which is "
        "what the client, the kernel and one HTTP round trip cost on this machine; and a bare Kafka "
        "produce round trip (acks=all, idempotent) at the same rate, from one Python producer. What is "
        "left of the ingest p50 after both is the service's own cost.\n\n" + report.md_table(head, rows)
    )
