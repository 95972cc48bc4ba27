"""Reading ``/metrics`` endpoints directly (no Prometheus): samples, rates and histogram quantiles.

``top`` uses it; the arithmetic mirrors PromQL's ``rate`` and ``histogram_quantile`` closely enough
for a live view (counter resets are treated as a restart from zero).
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from barcode_pipeline.monitoring.targets import Target

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, str, Labels]  # (service, sample name, labels without le)


@dataclass
class Sample:
    """Every sample of every reachable target at one moment."""

    taken_at: float  # monotonic seconds
    values: dict[Key, float] = field(default_factory=dict)
    buckets: dict[Key, dict[float, float]] = field(default_factory=dict)  # histogram: le -> cumulative count
    up: dict[str, bool] = field(default_factory=dict)  # service -> answered


def parse_into(sample: Sample, service: str, text: str) -> None:
    """Add one target's exposition text to ``sample``."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if s.name.endswith("_bucket") and "le" in labels:
                le = float(labels.pop("le"))
                key = (service, s.name[: -len("_bucket")], tuple(sorted(labels.items())))
                sample.buckets.setdefault(key, {})[le] = float(s.value)
            else:
                sample.values[(service, s.name, tuple(sorted(labels.items())))] = float(s.value)


def fetch(url: str, timeout: float = 0.8) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback URLs built from settings
            body: bytes = resp.read()
            return body.decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def take(targets: Iterable[Target], get: Callable[[str], str | None] = fetch) -> Sample:
    sample = Sample(taken_at=time.monotonic())
    for target in targets:
        text = get(target.url)
        sample.up[target.name] = text is not None
        if text is not None:
            parse_into(sample, target.name, text)
    return sample


def _match(key: Key, name: str, service: str | None, labels: Mapping[str, str]) -> bool:
    svc, sample_name, key_labels = key
    if sample_name != name or (service is not None and svc != service):
        return False
    have = dict(key_labels)
    return all(have.get(k) == v for k, v in labels.items())


def total(sample: Sample, name: str, service: str | None = None, **labels: str) -> float:
    """Sum of a sample over targets (optionally one service) and matching labels."""
    return sum(v for k, v in sample.values.items() if _match(k, name, service, labels))


def rate(old: Sample, new: Sample, name: str, service: str | None = None, **labels: str) -> float:
    """Per-second increase of a counter between two samples (a reset counts from zero)."""
    dt = new.taken_at - old.taken_at
    if dt <= 0:
        return 0.0
    increase = 0.0
    for key, value in new.values.items():
        if _match(key, name, service, labels):
            before = old.values.get(key, 0.0)
            increase += value - before if value >= before else value
    return increase / dt


def bucket_delta(old: Sample, new: Sample, name: str, service: str | None = None) -> dict[float, float]:
    """Observations per bucket between two samples, summed over targets and labels."""
    out: dict[float, float] = {}
    for key, buckets in new.buckets.items():
        if not _match(key, name, service, {}):
            continue
        before = old.buckets.get(key, {})
        reset = any(v < before.get(le, 0.0) for le, v in buckets.items())
        for le, value in buckets.items():
            out[le] = out.get(le, 0.0) + (value if reset else value - before.get(le, 0.0))
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative buckets; None without observations."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for le in bounds:
        cumulative = buckets[le]
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound is all we know
            inside = cumulative - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, cumulative
    return lower
