"""Warm-up before a measured window: rounds of load until the tail has stopped falling.

A fresh broker keeps JIT-compiling its request path (a core busy) for about a minute of load; a warm
stack needs seconds. A fixed warm-up is too short for one or wasted on the other: stop on a steady p99.
"""

from __future__ import annotations

from collections.abc import Callable


def warm_until_steady(run_round: Callable[[int], float], min_rounds: int, max_rounds: int) -> list[float]:
    """Each round's p99 (ms), until the last two both failed to beat the best earlier round by a fifth
    (so one lucky or unlucky round neither ends the warm-up nor prolongs it)."""
    p99s: list[float] = []
    for index in range(max_rounds):
        p99s.append(run_round(index))
        if len(p99s) >= max(min_rounds, 3):
            best_before = min(p99s[:-2])
            if min(p99s[-2:]) > 0.8 * best_before:
                break
    return p99s


def warm_for(run_round: Callable[[int], float], total_s: float, round_s: float) -> list[float]:
    """:func:`warm_until_steady` in rounds of ``round_s`` seconds, ``total_s`` at most
    (at least 3 rounds when 3 fit, never fewer than 1)."""
    rounds = max(1, round(total_s / round_s))
    return warm_until_steady(run_round, min(3, rounds), rounds)
