"""GS1 barcodes (EAN-13 and ITF-14) with correct check digits. Pure: no I/O, no global state.

Simulated scans must look like what a logistics center's scanners read, so that validation,
storage and any barcode-level dedup see realistic data. Codes come from a counter passed
through a bijection, so a run never repeats a barcode by chance (with ``dedup_policy=barcode``
a random collision would look like a lost scan in a benchmark's acknowledged-vs-stored check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# GS1 prefixes (first three digits of a GTIN-13), weighted like the goods of a Korean center:
# mostly domestic (880), then China, Japan, the US/Canada (UPC as EAN-13) and Germany.
_PREFIXES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("880",), 0.70),
    (tuple(str(p) for p in range(690, 700)), 0.10),
    (tuple(str(p) for p in (*range(450, 460), *range(490, 500))), 0.08),
    (tuple(f"{p:03d}" for p in range(1, 20)), 0.07),
    (tuple(str(p) for p in range(400, 441)), 0.05),
)
_PAYLOAD_DIGITS = 9  # GTIN-13 = 3 prefix + 9 company/item digits + 1 check digit
_PAYLOAD_SPACE = 10**_PAYLOAD_DIGITS
# Multiplier coprime with 10: n -> (n * A + B) mod 10^9 is a bijection that scatters a counter.
_SCRAMBLE = 387_420_489  # 3^18


def gs1_check_digit(digits: str) -> int:
    """Mod-10 check digit of a GS1 payload (EAN-8/13, UPC-A, GTIN-14/ITF-14 alike).

    Weights 3 and 1 alternate from the rightmost payload digit leftwards.
    """
    if not digits.isdigit() or not digits.isascii():
        raise ValueError(f"a GS1 payload is decimal digits, got {digits!r}")
    total = 0
    for position, char in enumerate(reversed(digits)):
        total += int(char) * (3 if position % 2 == 0 else 1)
    return (10 - total % 10) % 10


def is_valid_gs1(code: str) -> bool:
    """True if ``code`` is all digits, at least 2 long, and ends with its correct check digit."""
    if len(code) < 2 or not code.isdigit() or not code.isascii():
        return False
    return gs1_check_digit(code[:-1]) == int(code[-1])


def is_valid_ean13(code: str) -> bool:
    return len(code) == 13 and is_valid_gs1(code)


def is_valid_itf14(code: str) -> bool:
    """ITF-14 carries a GTIN-14: packaging indicator 0-8 (9 = variable measure), 12 digits, check."""
    return len(code) == 14 and is_valid_gs1(code)


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
    _choices: tuple[str, ...] = field(init=False, repr=False)
    _weights: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.stream < self.streams:
            raise ValueError("stream must be in [0, streams)")
        if not 0.0 <= self.itf14_ratio <= 1.0:
            raise ValueError("itf14_ratio must be in [0, 1]")
        self._rng = random.Random(f"{self.seed}:{self.stream}")
        self._offset = random.Random(self.seed).randrange(_PAYLOAD_SPACE)
        choices: list[str] = []
        weights: list[float] = []
        for prefixes, weight in _PREFIXES:
            choices.extend(prefixes)
            weights.extend([weight / len(prefixes)] * len(prefixes))
        self._choices, self._weights = tuple(choices), tuple(weights)

    def _payload(self) -> str:
        n = self._next * self.streams + self.stream
        self._next += 1
        return f"{(n * _SCRAMBLE + self._offset) % _PAYLOAD_SPACE:09d}"

    def next_ean13(self) -> str:
        prefix = self._rng.choices(self._choices, self._weights)[0]
        return ean13(prefix + self._payload())

    def next_itf14(self) -> str:
        return itf14(self._rng.randint(1, 8), self.next_ean13())

    def next(self) -> str:
        """One barcode; ITF-14 with probability ``itf14_ratio``."""
        if self.itf14_ratio and self._rng.random() < self.itf14_ratio:
            return self.next_itf14()
        return self.next_ean13()
