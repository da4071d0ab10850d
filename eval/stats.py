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


def pooled_paired_test(pairs: list[tuple[int, int]]) -> dict[str, float]:
    """Paired comparisons pooled over independent replicates (seeds), each given as its
    discordant pairs (fixed, broken): the Mantel-Haenszel test for matched pairs,
    stratified by replicate. Every pair of verdicts is its own stratum, so it reduces to
    McNemar's test on the pooled discordant pairs, computed here exactly; the estimate is
    the pooled odds of fixed to broken.

    Hand-worked: replicates with 20/6 and 15/8 pool to 35 fixed and 14 broken; under "no
    change is more likely fixed than broken" the chance of 14 or fewer broken of 49 is
    sum(C(49, i), i <= 14) / 2^49 = 0.0019, twice that for two sides.

    >>> r = pooled_paired_test([(20, 6), (15, 8)])
    >>> r["fixed"], r["broken"], round(r["p_value"], 4), round(r["odds_ratio"], 2)
    (35, 14, 0.0038, 2.5)
    """
    fixed, broken = sum(f for f, _ in pairs), sum(b for _, b in pairs)
    return {"fixed": fixed, "broken": broken, "p_value": mcnemar_exact(fixed, broken),
            "odds_ratio": fixed / broken if broken else float("inf") if fixed else float("nan")}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation (n - 1), minimum and maximum of per-replicate effects.

    >>> spread([0.07, 0.10, 0.10])
    {'mean': 0.09, 'sd': 0.0173, 'min': 0.07, 'max': 0.1, 'n': 3}
    """
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {"mean": round(mean, 4), "sd": round(sd, 4), "min": min(values, default=float("nan")),
            "max": max(values, default=float("nan")), "n": n}


def bootstrap_interval(values: list[float], resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``values`` (say each problem's pass rate
    over k samples: the interval of avg@k), resampling problems with replacement; seeded,
    so the same values give the same interval.

    >>> bootstrap_interval([1.0] * 10), bootstrap_interval([0.0, 1.0] * 20)
    ((1.0, 1.0), (0.35, 0.65))
    """
    import random

    if not values:
        return (0.0, 0.0)
    rng, n = random.Random(seed), len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    return (round(means[int(tail * resamples)], 4), round(means[min(resamples - 1, int((1 - tail) * resamples))], 4))
