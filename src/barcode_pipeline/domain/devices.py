"""Device patterns: the glob patterns on deviceId that a scanner key or a trusted network may send for.

Pure rules, below the configuration (which validates ``BP_INGEST_TRUSTED_NETWORKS`` at start-up)
and the ingest's guard (which applies them per request).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from barcode_pipeline.errors import ConfigError

# deviceId's own alphabet plus the glob wildcards * and ?
_PATTERN = re.compile(r"[A-Za-z0-9._*?-]{1,64}")
_MEMO_LIMIT = 4096  # device verdicts remembered per key; a set bigger than this is simply cleared


def parse_patterns(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"A-*,B-?"`` (or an iterable) -> validated patterns; at least one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    patterns = tuple(p.strip() for p in items if p.strip())
    if not patterns:
        raise ConfigError("at least one device pattern is needed, e.g. SEOUL-CENTER-PC-*")
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            raise ConfigError(
                f"device pattern must be 1-64 of [A-Za-z0-9._-] and the wildcards * ?, got {pattern!r}"
            )
    return patterns


@dataclass(slots=True)
class DevicePatterns:
    """Glob patterns on deviceId, compiled once into one regex; verdicts memoised per device."""

    patterns: tuple[str, ...]
    _any: bool = field(init=False)
    _regex: re.Pattern[str] = field(init=False)
    _memo: dict[str, bool] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._any = "*" in self.patterns
        self._regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))

    def allows(self, device_id: str) -> bool:
        if self._any:
            return True
        verdict = self._memo.get(device_id)
        if verdict is None:
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            verdict = self._memo[device_id] = self._regex.match(device_id) is not None
        return verdict

    def __str__(self) -> str:
        return ",".join(self.patterns)
