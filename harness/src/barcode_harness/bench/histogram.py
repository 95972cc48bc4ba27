"""Latency recording on HDR histograms (the ``hdrhistogram`` package), in microseconds.

Every percentile within a fixed relative error at any scale, ~1 µs a record, and exact merging: load
processes ship encoded histograms and the parent adds them up (averaging percentiles would be wrong).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: no latency a run can produce is clipped
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """What reports print, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatencyHistogram:
    """A latency histogram in microseconds; ``digits`` significant digits (3 = 0.1 % error)."""

    __slots__ = ("_h",)

    def __init__(self, digits: int = 3, *, _hdr: Any = None) -> None:
        self._h: Any = _hdr if _hdr is not None else HdrHistogram(LOWEST_US, HIGHEST_US, digits)

    def record_us(self, value_us: int, count: int = 1) -> None:
        """Record a latency; values outside the trackable range are clamped, never silently dropped."""
        if not 0 <= value_us <= HIGHEST_US:
            value_us = min(max(value_us, 0), HIGHEST_US)
        self._h.record_value(value_us, count)

    def record_s(self, seconds: float) -> None:
        self.record_us(round(seconds * 1_000_000))

    def add(self, other: LatencyHistogram) -> None:
        """Merge ``other`` into this histogram (exact: counts add up bucket by bucket)."""
        self._h.add(other._h)

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    def percentile_us(self, percentile: float) -> int:
        return int(self._h.get_value_at_percentile(percentile))

    def percentiles_us(self, percentiles: Sequence[float] = PERCENTILES) -> dict[float, int]:
        values = self._h.get_percentile_to_value_dict(percentiles)  # {} when empty
        return {p: int(values.get(p, 0)) for p in percentiles}

    @property
    def max_us(self) -> int:
        return int(self._h.get_max_value())

    @property
    def mean_us(self) -> float:
        return float(self._h.get_mean_value())

    def summary(self) -> LatencySummary:
        p50, p90, p99, p999 = (v / 1000 for v in self.percentiles_us().values())
        return LatencySummary(
            self.count, p50, p90, p99, p999, self.max_us / 1000, round(self.mean_us / 1000, 3)
        )

    def encode(self) -> str:
        """The standard HdrHistogram V2 compressed, base64 form (also readable by other HDR tools)."""
        return str(self._h.encode().decode("ascii"))

    @classmethod
    def decode(cls, encoded: str | bytes) -> LatencyHistogram:
        return cls(_hdr=HdrHistogram.decode(encoded))

    @classmethod
    def merged(cls, encoded: Iterable[str | bytes]) -> LatencyHistogram:
        """One histogram from the encoded histograms of several processes."""
        total = cls()
        for item in encoded:
            total.add(cls.decode(item))
        return total


_EMPTY = LatencyHistogram(2)  # what a second without answers reads as


@dataclass(slots=True)
class SecondPoint:
    """One second of a run (by scheduled send time): for latency-over-time charts."""

    second: int
    count: int  # responses
    ok: int  # 2xx
    errors: int  # non-2xx answers and transport failures
    p50_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TimeSeries:
    """Per-second counts and a 2-digit histogram per second (about 20 KB each), mergeable like the rest."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # second -> [responses, ok, errors, histogram]
        self._buckets: defaultdict[int, list[Any]] = defaultdict(lambda: [0, 0, 0, LatencyHistogram(2)])

    def record(self, second: int, latency_us: int, ok: bool) -> None:
        bucket = self._buckets[second]
        bucket[0] += 1
        bucket[1 if ok else 2] += 1
        bucket[3].record_us(latency_us)

    def error(self, second: int) -> None:
        """A failure without a response (connection error, timeout): counted, no latency."""
        self._buckets[second][2] += 1

    def _add(self, second: int, count: int, ok: int, errors: int, hist: LatencyHistogram) -> None:
        bucket = self._buckets[second]
        bucket[0] += count
        bucket[1] += ok
        bucket[2] += errors
        bucket[3].add(hist)

    def encode(self) -> list[tuple[int, int, int, int, str]]:
        return [(s, b[0], b[1], b[2], b[3].encode()) for s, b in sorted(self._buckets.items())]

    def add_encoded(self, rows: Iterable[tuple[int, int, int, int, str]]) -> None:
        for second, count, ok, errors, hist in rows:
            self._add(second, count, ok, errors, LatencyHistogram.decode(hist))

    def coarse(self, width_s: int) -> TimeSeries:
        """The series in ``width_s``-second buckets (keyed by their first second), for exact interval
        percentiles: histograms of seconds add up, their percentiles do not."""
        out = TimeSeries()
        for second, (count, ok, errors, hist) in self._buckets.items():
            out._add(second - second % width_s, count, ok, errors, hist)
        return out

    def histograms(self) -> dict[int, LatencyHistogram]:
        """Each bucket's latency histogram, by its first second."""
        return {second: bucket[3] for second, bucket in sorted(self._buckets.items())}

    def points(self, seconds: int | None = None, step: int = 1) -> list[SecondPoint]:
        """One point per ``step`` seconds from 0 (gaps filled with zeros, so charts show stalls as stalls);
        ``step`` is the width of a :meth:`coarse` series."""
        span = max(max(self._buckets, default=-1) + 1, seconds or 0)
        out = []
        for second in range(0, span, step):
            count, ok, errors, hist = self._buckets.get(second) or (0, 0, 0, _EMPTY)
            p = hist.percentiles_us((50.0, 99.0))
            out.append(
                SecondPoint(second, count, ok, errors, p[50.0] / 1000, p[99.0] / 1000, hist.max_us / 1000)
            )
        return out
