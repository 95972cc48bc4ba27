"""Database write I/O from ``SHOW GLOBAL STATUS``: totals per phase and a per-second series.

The original study's ``Innodb_data_writes`` leaves out MariaDB 10.11's redo-log writes, and a synchronous
commit costs a redo-log write plus an fsync: the reports lead with ``Innodb_log_writes`` and
``Innodb_data_fsyncs``. The counters are server-wide: phases must not overlap, and an async phase is
sampled only after the pipeline drained.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from barcode_harness.bench.sampler import Sampler
from barcode_pipeline.adapters import db

COUNTERS = (
    "Innodb_log_writes",
    "Innodb_data_fsyncs",
    "Innodb_os_log_fsyncs",  # MySQL and older MariaDB only; absent on MariaDB 10.11
    "Innodb_data_writes",
    "Innodb_os_log_written",  # redo bytes, for context
    "Com_commit",
)
# What the targets call "redo-log writes and fsyncs".
HEADLINE = ("Innodb_log_writes", "Innodb_data_fsyncs")
_QUERY = "SHOW GLOBAL STATUS WHERE Variable_name IN ({})".format(", ".join(f"'{c}'" for c in COUNTERS))


@dataclass(frozen=True)
class Snapshot:
    t: float  # wall clock, epoch seconds
    values: dict[str, int]


@dataclass
class IoDelta:
    """Counter increments over a window, with the scans stored in it."""

    seconds: float
    scans: int
    deltas: dict[str, int] = field(default_factory=dict)

    def per_1k(self, counter: str) -> float | None:
        return self.deltas.get(counter, 0) * 1000 / self.scans if self.scans else None

    def __add__(self, other: IoDelta) -> IoDelta:
        deltas = Counter(self.deltas)
        deltas.update(other.deltas)  # unlike +, keeps the counters that did not move
        return IoDelta(self.seconds + other.seconds, self.scans + other.scans, dict(sorted(deltas.items())))

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "scans": self.scans,
            "deltas": self.deltas,
            "per_second": {
                k: round(v / self.seconds, 2) if self.seconds > 0 else 0.0 for k, v in self.deltas.items()
            },
            "per_1k_scans": {k: None if (v := self.per_1k(k)) is None else round(v, 2) for k in self.deltas},
        }


def delta(before: Snapshot, after: Snapshot, scans: int) -> IoDelta:
    deltas = {k: after.values[k] - before.values.get(k, 0) for k in COUNTERS if k in after.values}
    return IoDelta(after.t - before.t, scans, deltas)


class DbSampler(Sampler[Snapshot]):
    """Samples the counters every ``interval_s`` on a thread, for the writes-per-second charts; its one
    autocommit connection (reading the counters writes nothing) is also read between samples."""

    def __init__(self, db_url: str, interval_s: float = 1.0) -> None:
        self._conn: Any = db.connect(db_url, autocommit=True)
        self._lock = threading.Lock()
        super().__init__(self.snapshot, interval_s, join_s=10.0)

    def __exit__(self, *exc: object) -> None:
        super().__exit__()
        self._conn.close()

    def _rows(self, sql: str) -> list[Any]:
        with self._lock, self._conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def snapshot(self) -> Snapshot:
        return Snapshot(time.time(), {str(k): int(v) for k, v in self._rows(_QUERY)})

    def server(self) -> str:
        (version,) = self._rows("SELECT VERSION()")[0]
        name = "MariaDB" if "mariadb" in str(version).lower() else "MySQL"
        return f"{name} {version}"

    def rates(self, start: float, end: float) -> dict[str, Any]:
        """Per-second rates of the headline counters from wall-clock ``start`` to ``end`` (t from start)."""
        window = [s for s in self.samples if start - self.interval_s <= s.t <= end + self.interval_s]
        pairs = [(a, b) for a, b in itertools.pairwise(window) if b.t > a.t and b.t >= start]
        out: dict[str, Any] = {"t": [round(b.t - start, 2) for _, b in pairs]}
        for c in HEADLINE:
            out[c] = [round((b.values.get(c, 0) - a.values.get(c, 0)) / (b.t - a.t), 2) for a, b in pairs]
        return out
