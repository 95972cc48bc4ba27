"""PNG charts for the bench reports (matplotlib, headless Agg): time series in stacked panels, the
batching-delay trade-off on two axes, and latency against offered rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

COLORS = {"legacy": "#d62728", "async": "#1f77b4"}


@dataclass
class Line:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str | None = None
    style: str = "-"
    marker: str | None = None


@dataclass
class Panel:
    ylabel: str
    lines: list[Line]
    logy: bool = False
    shade: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, label)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_chart(path: Path, title: str, panels: list[Panel], *, xlabel: str = "seconds") -> Path:
    """Stacked panels sharing the time axis."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        for line in panel.lines:
            xs, ys = list(line.x), list(line.y)
            if panel.logy:  # a second without answers has no latency: leave a gap, not a zero
                xs, ys = [x for x, y in zip(xs, ys, strict=True) if y > 0], [y for y in ys if y > 0]
            if not xs:
                continue
            path_color = next((c for path, c in COLORS.items() if line.label.startswith(path)), None)
            ax.plot(xs, ys, line.style, label=line.label, color=line.color or path_color,
                    marker=line.marker, markersize=3, linewidth=1.2)  # fmt: skip
        for start, end, label in panel.shade:
            ax.axvspan(start, end, color="#ffbf00", alpha=0.18, label=label)
        if panel.logy:
            ax.set_yscale("log")
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        if any(line.x for line in panel.lines):
            ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(xlabel)
    return _save(fig, path)


def tradeoff_chart(
    path: Path,
    title: str,
    delays_ms: Sequence[float],
    writes_per_1k: dict[str, Sequence[float | None]],
    freshness: dict[str, Sequence[float]],
) -> Path:
    """Writes per 1,000 scans (left axis) and freshness (right axis) against the batching delay."""
    fig, left = plt.subplots(figsize=(9, 4.5))
    xs = list(range(len(delays_ms)))  # evenly spaced, labelled with the delay
    for (label, values), marker in zip(writes_per_1k.items(), ("o", "s", "^"), strict=False):
        left.plot(xs, [v if v is not None else float("nan") for v in values], marker=marker, label=label)
    left.set_xticks(xs, [str(int(d)) for d in delays_ms])
    left.set_xlabel("worker_max_delay_ms (persistence workers' maximum batching delay)")
    left.set_ylabel("DB writes per 1,000 scans")
    left.grid(True, alpha=0.3)
    right = left.twinx()
    for (label, values), style in zip(freshness.items(), ("--", ":"), strict=False):
        right.plot(xs, values, style, marker="x", color="#2ca02c", label=label)
    right.set_ylabel("freshness, scanTime → saved_time (ms)")
    (handles, labels), (more, names) = left.get_legend_handles_labels(), right.get_legend_handles_labels()
    left.legend(handles + more, labels + names, loc="upper center", fontsize=8)
    left.set_title(title)
    return _save(fig, path)


def rate_chart(path: Path, title: str, series: dict[str, list[tuple[float, float, bool]]]) -> Path:
    """p99 latency against offered scans/s per path; hollow markers = not sustained."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, points in series.items():
        points = sorted(points)
        if not points:
            continue
        xs = [p[0] for p in points]
        ys = [max(p[1], 0.01) for p in points]
        (line,) = ax.plot(xs, ys, "-", label=label, linewidth=1)
        fill = [line.get_color() if ok else "none" for _, _, ok in points]
        ax.scatter(xs, ys, facecolors=fill, edgecolors=line.get_color(), zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (scans/s)")
    ax.set_ylabel("client p99 latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title + "  (filled = sustained)")
    return _save(fig, path)
