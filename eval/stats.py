"""The statistics aha reports, each in one place: intervals for a proportion, the exact
paired tests (McNemar on greedy verdicts, the sign test on per-problem pass rates) and
quantiles."""

from __future__ import annotations

import math
import statistics


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well behaved near 0 and 1).

    >>> [round(x, 3) for x in wilson_interval(50, 100)]
    [0.404, 0.596]
    """
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    >>> round(mcnemar_exact(10, 2), 4), mcnemar_exact(0, 0)
    (0.0386, 1.0)
    """
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(fixed, broken) + 1)) / 2**n
    return min(1.0, 2 * tail)


def sign_test(up: int, down: int) -> float:
    """Two-sided exact sign test: as many ups vs downs as seen, under "no change is more
    likely up than down" (ties dropped). The same binomial tail as McNemar's.

    >>> round(sign_test(15, 4), 4)
    0.0192
    """
    return mcnemar_exact(up, down)


def quantile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation between order statistics (the
    "inclusive" rule of Python's ``statistics``); ``None`` for no values.

    >>> quantile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), quantile([4], 0.5), quantile([], 0.5)
    (9.1, 4.0, None)
    """
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    if q <= 0 or q >= 1:
        return float(min(values) if q <= 0 else max(values))
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return round(cuts[round(q * 1000) - 1], 9)
