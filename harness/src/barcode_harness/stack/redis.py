"""Redis from Debian's ``redis-server``, on its own port with AOF on: the streams, their pending entries
and the dedup markers survive a crash; what ``appendfsync everysec`` may lose is re-read from Kafka."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import redis

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.base import Component
from barcode_harness.stack.process import find_binary


def listen_conf(home: Path, host: str, port: int, *, protected: bool, pidfile: str = "redis.pid") -> str:
    """Where a local Redis or Sentinel listens and keeps its data, pid and log."""
    return f"""bind {host}
port {port}
protected-mode {"yes" if protected else "no"}
daemonize no
dir {home / "data"}
pidfile {home / pidfile}
logfile {home / "logs" / "server.log"}"""


def server_conf(settings: HarnessSettings, home: Path, host: str, port: int, *, protected: bool) -> str:
    """A Redis server's ``listen_conf`` and append-only file (every profile)."""
    return f"""{listen_conf(home, host, port, protected=protected)}
appendonly yes
appendfilename "appendonly.aof"
appendfsync {settings.redis_appendfsync}
save \"\""""


# Every profile's memory rules. The local stack's bound: the steady state at 1,000 scans/s with the
# default dedup window is under 3 GiB; the rest of this 24 GiB machine's memory leaves room for the
# AOF rewrite's fork.
MEMORY_CONF = """\
# Bounded, and never evicting: an evicted stream entry or marker would lose or duplicate a scan. A
# full Redis refuses writes; the pipeline waits and resumes (docs/capacity.md, sizing).
maxmemory 4gb
maxmemory-policy noeviction
# Duplicate-marker hashes (processor/markers.py) stay in the compact encoding up to this many fields.
hash-max-listpack-entries 512
tcp-keepalive 60"""


def render_redis_conf(settings: HarnessSettings, home: Path) -> str:
    parts = urlsplit(settings.redis.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    return f"""# Rendered by barcode-pipeline; edits are overwritten on the next `stack up`.
{server_conf(settings, home, host, port, protected=True)}
auto-aof-rewrite-percentage 100
# Not before the log reaches 1 GB (Redis's default: 64 MB). Stream entries, acks, trims and dedup
# markers grow the log much faster than the data, so at bench rates the default rewrote it every
# 20-80 s: a forked child busy on one of the two shared cores for up to a second each time, which
# lined up with the longest ingest stalls. The cost: a longer log to replay when Redis restarts.
auto-aof-rewrite-min-size 1gb
{MEMORY_CONF}
"""


class RedisComponent(Component):
    name = "redis"
    stdout_name = "stdout.log"  # the server writes its own log file
    start_timeout = 30.0
    binary = "redis-server"  # Debian's package has the binary's name
    marker = binary
    conf_name = "redis.conf"
    keep_conf = False  # True where the server rewrites its own config (replication, Sentinel's state)

    @property
    def address(self) -> str:
        parts = urlsplit(self.settings.redis.url)
        return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"

    def render(self) -> str:
        conf = render_redis_conf(self.settings, self.home)
        if self.secure is None:
            return conf
        from barcode_harness.stack.secure import redis_conf

        return conf + redis_conf(self.home, urlsplit(self.settings.redis.url).port or 6379, self.secure)

    def prepare(self) -> None:
        self.make_dirs("data")
        conf = self.home / self.conf_name
        if not (self.keep_conf and conf.exists()):
            conf.write_text(self.render())

    def argv(self) -> list[str]:
        return [find_binary(self.binary, self.binary, self.name), str(self.home / self.conf_name)]

    def client(self) -> redis.Redis:
        """A short-lived client (closed on leaving its ``with``), for health and role queries."""
        url = self.settings.redis.url
        return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def check(self) -> None:
        with self.client() as r:
            r.ping()
