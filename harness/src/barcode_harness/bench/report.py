"""Where benchmark results go (``bench/results/<timestamp>/``: JSON, Markdown, PNG) and what every
report states: machine, versions, settings, targets. A report that does not say where and on what it
ran cannot be compared with anything, so that section is built here once for every command."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from barcode_harness.bench import procstats
from barcode_harness.settings import HARNESS_SECRET_FILES, HarnessSettings
from barcode_pipeline.config import flat

log = logging.getLogger(__name__)

LIBRARIES = ("confluent-kafka", "redis", "hiredis", "PyMySQL", "fastapi", "uvicorn", "uvloop", "httptools",
             "orjson", "pydantic", "hdrhistogram", "matplotlib")  # fmt: skip
# The lock every install of this repository uses (scripts/setup.sh): its digest names the whole set.
LOCK_FILE = Path(__file__).resolve().parents[4] / "uv.lock"


# --------------------------------------------------------------------------- results folder
KEEP_RESULTS = int(os.environ.get("BP_BENCH_KEEP_RESULTS", "20"))
_RESULT_NAME = re.compile(r"\d{8}-\d{6}(-\d+)?")


def prune_results(base: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` timestamped result folders of ``base`` (0: keep all)."""
    if keep <= 0:
        return []
    found = sorted(p for p in base.iterdir() if p.is_dir() and _RESULT_NAME.fullmatch(p.name))
    gone = found[:-keep]
    for old in gone:
        shutil.rmtree(old, ignore_errors=True)
    return gone


def new_results_dir(base: Path, command: str) -> Path:
    """A fresh ``<base>/<timestamp>/`` folder (suffixed if two runs start in the same second); the
    oldest beyond the last ``BP_BENCH_KEEP_RESULTS`` (20; 0 keeps all) are removed."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", *(f"-{i}" for i in range(2, 100))):
        path = base / f"{stamp}{suffix}"
        with contextlib.suppress(FileExistsError):
            path.mkdir(parents=True)
            log.info("%s results go to %s", command, path)
            prune_results(base, KEEP_RESULTS)
            return path
    raise FileExistsError(f"no free results folder under {base} for {stamp}")


def write_json(path: Path, payload: Any) -> None:
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    path.write_bytes(orjson.dumps(payload, option=options))


def command_line() -> str:
    """The command as typed (program name shortened), so a report says how to regenerate it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("barcode-pipeline"):
        argv[0] = "barcode-pipeline"
    return shlex.join(argv)


# --------------------------------------------------------------------------- environment
def _server_versions(settings: HarnessSettings) -> dict[str, str]:
    from barcode_pipeline.adapters import db
    from barcode_pipeline.adapters import redis as redis_adapter

    def database() -> str:
        with closing(db.connect(settings.db.url, autocommit=True)) as conn, conn.cursor() as cur:
            cur.execute("SELECT CONCAT(VERSION(), ' (', @@version_comment, ')')")
            return str(cur.fetchone()[0])

    def redis() -> str:
        with closing(redis_adapter.client(settings)) as client:
            return str(client.info("server").get("redis_version", "unknown"))

    out = {"kafka": f"{settings.kafka_version} (the local stack's distribution setting)"}
    for name, ask in (("database", database), ("redis", redis)):
        try:
            out[name] = ask()
        except Exception as exc:  # a report must still be written when a server is away
            out[name] = f"unknown ({exc})"
    return out


def lock_digest() -> str:
    """The first 12 hex digits of uv.lock's SHA-256, or ``none`` outside a checkout."""
    try:
        return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:12]
    except OSError:
        return "none"


def _installed(name: str, missing: str = "not installed") -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def versions(settings: HarnessSettings) -> dict[str, Any]:
    import confluent_kafka

    libs = {name: _installed(name) for name in LIBRARIES}
    libs["librdkafka"] = str(confluent_kafka.libversion()[0])
    return {
        "python": platform.python_version(),
        "barcode_pipeline": _installed("barcode-pipeline", "unknown"),
        "lock": lock_digest(),
        "servers": _server_versions(settings),
        "libraries": libs,
    }


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def shown_settings(settings: HarnessSettings) -> dict[str, Any]:
    """Every setting as a result file records it, each secret masked: result folders get shared."""
    shown = flat(settings, mode="json")
    for key in HARNESS_SECRET_FILES:
        value = str(shown[key])
        shown[key] = redact_url(value) if "://" in value else ("***" if value else "")
    return shown


def cpu_counters() -> tuple[int, int, int] | None:
    """(steal, idle incl. iowait, total) ticks of all CPUs since boot."""
    if (fields := procstats.cpu_fields()) is None:
        return None
    return fields[7], fields[3] + fields[4], sum(fields)


def cpu_since(start: Sequence[int] | None) -> dict[str, float] | None:
    """Steal and busy share of the machine's CPU time since ``start`` (a :func:`cpu_counters` value).

    Steal is time the hypervisor gave our vCPUs to someone else: it slows every stage at once and
    is the first thing to check when two runs of the same code disagree.
    """
    end = cpu_counters()
    if start is None or end is None or end[2] <= start[2]:
        return None
    total = end[2] - start[2]
    return {
        "steal_pct": round(100 * (end[0] - start[0]) / total, 1),
        "busy_pct": round(100 * (1 - (end[1] - start[1]) / total), 1),
    }


def environment(settings: HarnessSettings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the run ran on; call at its start and :func:`finish_environment` at its end."""
    info = procstats.machine()
    return {
        "cpu_at_start": cpu_counters(),
        "machine": info,
        "versions": versions(settings),
        "settings": shown_settings(settings),
        "shared_cores": f"Everything in this run (load-generating clients, ingest and legacy servers, "
        f"processor, workers, Kafka, Redis and MariaDB) ran on this one machine and shared its "
        f"{info['cores']} cores; no figure comes from dedicated hardware.",
        "command": command_line(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        **(extra or {}),
    }


def finish_environment(env: dict[str, Any]) -> dict[str, Any]:
    """Add the CPU steal and busy share over the run (from :func:`environment` until now)."""
    env["cpu_during_run"] = cpu_since(env.pop("cpu_at_start", None))
    return env


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One goal of the issue, with what was measured; ``met`` is None when it could not be measured."""

    name: str
    goal: str
    measured: str
    met: bool | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(
    name: str,
    value: float | None,
    op: Literal[">=", "<="],
    threshold: float,
    *,
    unit: str = "",
    fmt: str = "{:.2f}",
    note: str = "",
) -> Target:
    goal = f"{op} {fmt.format(threshold)}{unit}"
    if value is None or value != value:  # None or NaN: not measured
        return Target(name, goal, "not measured", None, note)
    met = value >= threshold if op == ">=" else value <= threshold
    return Target(name, goal, f"{fmt.format(value)}{unit}", met, note)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator; infinity when only the denominator is 0; None when unknown."""
    if numerator is None or denominator is None:
        return None
    if denominator == 0:
        return float("inf") if numerator > 0 else None
    return numerator / denominator


# --------------------------------------------------------------------------- markdown
def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):  # NaN: not measured either
            return "–"
        if isinstance(v, float):
            return "∞" if v == float("inf") else f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def md_targets(targets: Sequence[Target | dict[str, Any]]) -> str:
    goals = [t if isinstance(t, Target) else Target(**t) for t in targets]
    status = {None: "not measured", True: "**met**", False: "**missed**"}
    return md_table(
        ("target", "goal", "measured", "status", "note"),
        [(t.name, t.goal, t.measured, status[t.met], t.note) for t in goals],
    )


def md_head(env: dict[str, Any]) -> str:
    """A report's opening: its preset, the command that regenerates it, and the environment."""
    quick = " (short runs: indicative only)" if env["preset"] == "quick" else ""
    return (
        f"Preset **{env['preset']}**{quick}. Every figure below was produced by `{env['command']}`; "
        f"rerun it to regenerate them.\n\n{md_environment(env)}"
    )


def md_environment(env: dict[str, Any]) -> str:
    m = env["machine"]
    v = env["versions"]
    servers = v["servers"]
    libs = ", ".join(f"{k} {val}" for k, val in v["libraries"].items())
    s = env["settings"]
    keys = ("ingest_processes", "linger_ms", "producer_max_in_flight", "topic_partitions", "stream_shards",
            "processor_batch", "workers", "worker_batch_size", "worker_max_delay_ms", "legacy_pool_size",
            "legacy_threads", "redis_appendfsync", "dedup_policy")  # fmt: skip
    shown = ", ".join(f"`{k}={s[k]}`" for k in keys if k in s)
    used = "not recorded."
    if cpu := env.get("cpu_during_run"):
        used = f"{cpu['busy_pct']} % busy, {cpu['steal_pct']} % stolen by the hypervisor " + (
            "(time our vCPUs waited for a physical core; it slows every stage at once)."
        )
    lines = [
        f"- **Machine**: {m['cores']} cores ({m['usable_cores']} usable), {m['memory_gb']} GiB memory, "
        f"{m['cpu_model']}; {m['os']}; load average at start {m['load_average_at_start']}.",
        f"- **Shared cores**: {env['shared_cores']}",
        f"- **CPU during the run**: {used}",
        f"- **Servers**: MariaDB {servers.get('database')}; Redis {servers.get('redis')}; "
        f"Kafka {servers.get('kafka')}.",
        f"- **Python** {v['python']}, barcode-pipeline {v['barcode_pipeline']}; {libs} "
        f"(installed from uv.lock, sha256 {v.get('lock', 'unknown')}…).",
        f"- **Settings**: {shown} (all settings are in the JSON file).",
        f"- **Command**: `{env['command']}` (started {env['started_at']}).",
    ]
    return "## Environment\n\n" + "\n".join(lines)


def md_document(title: str, sections: Sequence[str]) -> str:
    return f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections if s.strip()) + "\n"


def progress_logger(name: str) -> Callable[[str], None]:
    """What the commands call between steps: a log line (the CLI shows INFO on stderr)."""
    logger = logging.getLogger(name)
    return lambda message: logger.info("%s", message)
