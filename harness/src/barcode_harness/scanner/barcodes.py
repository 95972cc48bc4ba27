"""GS1 barcodes (EAN-13 and ITF-14) with correct check digits, as a logistics center's scanners read.

Codes come from a counter passed through a bijection, so a run never repeats a barcode by chance
(with ``dedup_policy=barcode`` a collision would look like a lost scan in a benchmark's check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import cycle

# GS1 prefixes (first three digits of a GTIN-13), weighted like the goods of a Korean center:
# mostly domestic (880), then China, Japan, the US/Canada (UPC as EAN-13) and Germany.
_PREFIXES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("880",), 0.70),
    (tuple(str(p) for p in range(690, 700)), 0.10),
    (tuple(str(p) for p in (*range(450, 460), *range(490, 500))), 0.08),
    (tuple(f"{p:03d}" for p in range(1, 20)), 0.07),
    (tuple(str(p) for p in range(400, 441)), 0.05),
)
_CHOICES = tuple(p for prefixes, _ in _PREFIXES for p in prefixes)
_WEIGHTS = tuple(weight / len(prefixes) for prefixes, weight in _PREFIXES for _ in prefixes)
_PAYLOAD_SPACE = 10**9  # GTIN-13 = 3 prefix + 9 company/item digits + 1 check digit
# Multiplier coprime with 10: n -> (n * A + B) mod 10^9 is a bijection that scatters a counter.
_SCRAMBLE = 387_420_489  # 3^18


def gs1_check_digit(digits: str) -> int:
    """Mod-10 check digit of a GS1 payload (EAN-8/13, UPC-A, ITF-14): weights 3, 1, 3, ... from the right."""
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"a GS1 payload is decimal digits, got {digits!r}")
    total = sum(int(char) * weight for char, weight in zip(reversed(digits), cycle((3, 1))))
    return -total % 10


def is_valid_gs1(code: str) -> bool:
    """True if ``code`` is all digits, at least 2 long, and ends with its correct check digit."""
    return len(code) > 1 and code.isascii() and code.isdigit() and gs1_check_digit(code[:-1]) == int(code[-1])


def is_valid_ean13(code: str) -> bool:
    return len(code) == 13 and is_valid_gs1(code)


def ean13(payload12: str) -> str:
    """Complete a 12-digit payload into an EAN-13."""
    if len(payload12) != 12:
        raise ValueError(f"an EAN-13 payload has 12 digits, got {len(payload12)}")
    return f"{payload12}{gs1_check_digit(payload12)}"


def itf14(indicator: int, gtin13: str) -> str:
    """The ITF-14 of a case holding the item ``gtin13``: indicator + its 12 payload digits + new check."""
    if not 1 <= indicator <= 8:
        raise ValueError("a case's packaging indicator is 1-8")
    if not is_valid_ean13(gtin13):
        raise ValueError(f"not a valid EAN-13: {gtin13!r}")
    payload = f"{indicator}{gtin13[:12]}"
    return f"{payload}{gs1_check_digit(payload)}"


@dataclass(slots=True)
class BarcodeFactory:
    """Unique, realistic barcodes: a mix of item labels (EAN-13) and case labels (ITF-14).

    ``stream``/``streams`` split the code space between independent generators (one per load
    process), so together they still never repeat; ``seed`` picks the run's starting point.
    """

    seed: int = 0
    stream: int = 0
    streams: int = 1
    itf14_ratio: float = 0.3
    _rng: random.Random = field(init=False, repr=False)
    _offset: int = field(init=False, repr=False)
    _next: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.stream < self.streams:
            raise ValueError("stream must be in [0, streams)")
        if not 0.0 <= self.itf14_ratio <= 1.0:
            raise ValueError("itf14_ratio must be in [0, 1]")
        self._rng = random.Random(f"{self.seed}:{self.stream}")
        self._offset = random.Random(self.seed).randrange(_PAYLOAD_SPACE)

    def next(self) -> str:
        """One barcode; ITF-14 (a case of a new item) with probability ``itf14_ratio``."""
        case = self.itf14_ratio > 0 and self._rng.random() < self.itf14_ratio
        indicator = self._rng.randint(1, 8) if case else 0
        n = self._next * self.streams + self.stream
        self._next += 1
        prefix = self._rng.choices(_CHOICES, _WEIGHTS)[0]
        item = ean13(f"{prefix}{(n * _SCRAMBLE + self._offset) % _PAYLOAD_SPACE:09d}")
        return itf14(indicator, item) if case else item
