"""``bench hostile``: can clients without a key starve the keyed scanners?

Keyed scanners send ``rate`` scans/s alone, then while an attacker process holds slow connections
that never finish their headers, streams huge header lines and sends requests with random keys.
Required: every keyed scan answered 2xx, p99 under attack at most 3x alone, ingest memory up by
less than 100 MB, no restart. The attacker's own counts (408, 431, 401) show the attack ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from barcode_harness.bench import procstats, report
from barcode_harness.bench.env import ASYNC, BenchEnv, BenchRun
from barcode_harness.bench.loadgen import LoadResult
from barcode_harness.bench.sampler import Sampler
from barcode_harness.bench.specs import HostileSpec
from barcode_harness.bench.warmup import warm_for
from barcode_harness.scanner.scans import SEEDED_DEVICES, ScanFactory, encode_scan
from barcode_pipeline import names

say = report.progress_logger(__name__)

P99_RATIO_MAX = 3.0
RSS_GROWTH_MAX = 100 * 2**20
HEADER_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- the attacker (own process)
class Attack:
    """The three attacks on one event loop; counts what the server answered."""

    def __init__(self, host: str, port: int, spec: HostileSpec) -> None:
        self.host, self.port, self.spec = host, port, spec
        self.counts: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.body = encode_scan(ScanFactory(SEEDED_DEVICES).next())

    async def _status(self, reader: asyncio.StreamReader) -> None:
        """Wait for the server's answer (it closes after a refusal) and count its status."""
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=60)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            self.counts["no answer"] += 1
            return
        parts = line.split()
        self.counts[parts[1].decode() if len(parts) > 1 else "closed"] += 1

    async def _connections(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A new connection each time the last is done with, until stopped; a refused one after a pause."""
        while not self.stop.is_set():
            try:
                connected = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.counts["connect failed"] += 1
                await asyncio.sleep(0.5)
                continue
            yield connected

    async def headers(self, line: bytes, max_bytes: float, pause_s: float) -> None:
        """Header lines on a connection that never ends its head, up to ``max_bytes``, ``pause_s`` apart
        (a slow client) or as fast as the server takes them (a header stream); again when cut off."""
        async for reader, writer in self._connections():
            writer.write(f"POST {names.ROUTE_SCAN} HTTP/1.1\r\nHost: x\r\n".encode())
            answer, sent = asyncio.ensure_future(self._status(reader)), 0
            with contextlib.suppress(OSError):
                while sent < max_bytes and not answer.done() and not self.stop.is_set():
                    writer.write(line)
                    await writer.drain()
                    sent += len(line)
                    if pause_s:
                        await asyncio.wait([answer], timeout=pause_s)
            writer.close()
            await answer

    async def invalid_keys(self, connections: int = 50) -> None:
        """``invalid_key_rate`` requests/s, each with a fresh random key, over keep-alive connections."""
        interval = connections / self.spec.invalid_key_rate

        async def one() -> None:
            async for reader, writer in self._connections():
                with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                    while not self.stop.is_set():
                        started = time.monotonic()
                        key = "bpk_" + secrets.token_urlsafe(32)
                        writer.write(
                            f"POST {names.ROUTE_SCAN} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
                            "\r\n".encode()
                            + self.body
                        )
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
                        self.counts[head.split()[1].decode()] += 1
                        length = next((int(h.split(b":")[1]) for h in head.lower().split(b"\r\n")
                                       if h.startswith(b"content-length:")), 0)  # fmt: skip
                        await reader.readexactly(length)
                        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
                writer.close()

        await asyncio.gather(*(one() for _ in range(connections)))

    async def run(self, conn: Connection) -> None:
        big = b"X-Pad: " + b"a" * (HEADER_CHUNK - 9) + b"\r\n"
        tasks = [asyncio.ensure_future(self.headers(b"X-Slow: a\r\n", math.inf, 1.0))
                 for _ in range(self.spec.slow_connections)]  # fmt: skip
        tasks += [asyncio.ensure_future(self.headers(big, self.spec.header_stream_bytes, 0))
                  for _ in range(self.spec.header_streams)]  # fmt: skip
        tasks.append(asyncio.ensure_future(self.invalid_keys()))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # the parent says stop
        self.stop.set()
        await asyncio.wait(tasks, timeout=15)
        for task in tasks:
            task.cancel()


def _attack_main(host: str, port: int, spec: HostileSpec, conn: Connection) -> None:
    import resource

    import uvloop

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of connections of our own
    attack = Attack(host, port, spec)
    uvloop.run(attack.run(conn))
    conn.send(dict(attack.counts))


@contextlib.contextmanager
def attacking(host: str, port: int, spec: HostileSpec) -> Iterator[tuple[int | None, dict[str, int]]]:
    """The attack in a spawned process (its CPU is not the keyed load's): its pid, and what it counted
    once stopped on exit."""
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=_attack_main, args=(host, port, spec, child), daemon=True)
    proc.start()
    counts: dict[str, int] = {}
    try:
        yield proc.pid, counts
    finally:
        conn.send("stop")
        if conn.poll(60):
            counts.update(conn.recv())
        proc.join(30)
        if proc.is_alive():
            proc.kill()


# --------------------------------------------------------------------------- the run
def _ingest_rss(env: BenchEnv) -> int:
    return procstats.resources(env.pids()).get("ingest", procstats.Resources(0, 0, 0, 0)).rss_bytes


def _keyed(
    env: BenchEnv, spec: HostileSpec, out: Path, label: str, duration_s: float = 0, pid: int | None = None
) -> tuple[LoadResult, dict[str, float]]:
    """The keyed load, and the cores each group kept busy meanwhile (the attacker apart)."""
    roots = env.pids() | ({"attacker": [pid]} if pid else {})
    before = procstats.snapshot(roots, rest="keyed client")
    result = env.load(ASYNC, rate=spec.rate, duration_s=duration_s or spec.duration_s,
                      acked=out / f"acked-{label}.txt", timeout_s=30.0)  # fmt: skip
    return result, procstats.cores_used(before, procstats.snapshot(roots, rest="keyed client"))


def _phase(load: LoadResult) -> dict[str, Any]:
    """A keyed phase for the JSON: its tail, its answers and its seconds (a burst shows in those)."""
    return {
        "latency_ms": load.latency.to_dict(),
        "errors": load.errors,
        "ok": load.ok,
        "status_counts": load.status_counts,
        "seconds": [(p.second, p.p99_ms, p.max_ms) for p in load.timeseries],
    }


def run_hostile(spec: HostileSpec, run: BenchRun) -> dict[str, Any]:
    settings, out = run.settings, run.out
    out.mkdir(parents=True, exist_ok=True)
    with run.started(spec, legacy=False) as (env, env_info):
        restarts0 = env.restarts()
        say(f"hostile: warm-up, rounds of {spec.warmup_round_s:g} s until the keyed p99 stops falling")

        def warm(i: int) -> float:
            return _keyed(env, spec, out, f"warm-up-{i + 1}", spec.warmup_round_s)[0].latency.p99_ms

        warmup = warm_for(warm, spec.warmup_s, spec.warmup_round_s)
        say(f"hostile: {spec.rate:g} keyed scans/s alone for {spec.duration_s:g} s")
        alone, cpu_alone = _keyed(env, spec, out, "alone")
        with Sampler(lambda: _ingest_rss(env)) as rss:
            rss_before = _ingest_rss(env)
            say(f"hostile: attack ({spec.slow_connections} slow connections, {spec.header_streams} header "
                f"streams, {spec.invalid_key_rate:g} invalid keys/s), then the keyed load again")  # fmt: skip
            with attacking(settings.ingest.host, settings.ingest.port, spec) as (pid, counts):
                time.sleep(spec.ramp_s)
                attacked, cpu_attacked = _keyed(env, spec, out, "attacked", pid=pid)
            rss_after = _ingest_rss(env)
        restarts = env.restarts() - restarts0
        env.drain(timeout=120)
        stored = [env.verify(ASYNC, r) for r in (alone, attacked)]
    ratio = attacked.latency.p99_ms / alone.latency.p99_ms if alone.latency.p99_ms else None
    rss_peak = max(rss.samples, default=0)
    targets = [
        report.check("keyed requests not answered 2xx, alone and under attack",
                     alone.errors + attacked.errors, "<=", 0, fmt="{:.0f}"),
        report.check(f"keyed p99 under attack ÷ alone ({alone.latency.p99_ms:.1f} → "
                     f"{attacked.latency.p99_ms:.1f} ms)", ratio, "<=", P99_RATIO_MAX),
        report.check("ingest RSS growth, peak under attack", (rss_peak - rss_before) / 2**20, "<=",
                     RSS_GROWTH_MAX / 2**20, unit=" MiB", fmt="{:.0f}"),
        report.check("processes restarted", restarts, "<=", 0, fmt="{:.0f}"),
        report.check("acknowledged keyed scans missing or stored twice",
                     sum(v.missing + v.duplicate_rows for v in stored), "<=", 0, fmt="{:.0f}"),
        *(report.check(f"attack answered: {what} ({code})", counts.get(code, 0), ">=", 1, fmt="{:.0f}")
          for code, what in (("408", "slow heads cut"), ("431", "oversized heads refused"),
                             ("401", "invalid keys refused"))),
    ]  # fmt: skip
    result = {
        "command": "hostile",
        "environment": env_info,
        "alone": _phase(alone),
        "attacked": _phase(attacked),
        "warmup_p99_ms": warmup,
        "attack_answers": counts,
        "cores": {"alone": cpu_alone, "attacked": cpu_attacked},
        "ingest_rss_bytes": {"before": rss_before, "peak": rss_peak, "after": rss_after},
        "restarts": restarts,
        "verification": [v.to_dict() for v in stored],
        "targets": [t.to_dict() for t in targets],
    }
    return run.write("hostile", result, markdown)


def _md_cores(cores: dict[str, dict[str, float]]) -> str:
    """One row per group, alone and under attack: where the attack's cost landed on the shared cores."""
    groups = sorted({g for phase in cores.values() for g in phase}, key=lambda g: (g == "machine", g))
    rows = [(g, *(f"{cores.get(p, {}).get(g, 0):.2f}" for p in ("alone", "attacked"))) for g in groups]
    return report.md_table(("group", "alone", "under attack"), rows)


def markdown(result: dict[str, Any]) -> str:
    answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(result["attack_answers"].items()))
    return report.md_document("bench hostile", [
        report.md_environment(result["environment"]),
        "## Targets\n\n" + report.md_targets(result["targets"]),
        f"## The attacker's answers\n\n{answers}",
        "## Cores kept busy (average over each keyed phase)\n\n" + _md_cores(result.get("cores", {})),
        "## Ingest memory\n\n" + orjson.dumps(result["ingest_rss_bytes"]).decode(),
    ])  # fmt: skip
