"""The Hodges-Lehmann shift of paired differences and its exact distribution-free interval (Wilcoxon signed rank).

For n differences d_i, independent and symmetric about an unknown shift, the Hodges-Lehmann estimate is the median of
the N = n(n + 1) / 2 Walsh averages (d_i + d_j) / 2, i <= j, and the interval [W_(k), W_(N + 1 - k)] of their order
statistics is the set of shifts that the two-sided signed-rank test does not reject: k - 1 is that test's lower
critical value. Its coverage is exact for continuous data, whatever their distribution (Hollander & Wolfe,
"Nonparametric Statistical Methods", section 3.2). The signed-rank null distribution comes from an exact dynamic
programme up to EXACT_MAX_PAIRS pairs, the normal approximation beyond. Used by :mod:`specperf.analysis.ab`.

Stdlib and numpy; scipy (the p-value only) is imported inside :func:`signed_rank_p`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

# Most pairs for which the signed-rank null distribution is computed exactly (a 200-step programme on 20,101 numbers);
# beyond, the normal approximation with continuity correction: within 2 ranks of the exact critical value at ordinary
# levels (coverage short by under 0.001), and wider in the far tail, where the exact distribution's tails are lighter.
EXACT_MAX_PAIRS = 200
# Relative slack when a tail probability is compared with alpha / 2, so that an exact equality (1/32 at n = 5 and
# 93.75%) still counts despite float rounding in the programme.
_TAIL_SLACK = 1e-9

FloatArray = npt.NDArray[np.float64]
Floats = Sequence[float] | FloatArray  # figures in pair order


@cache
def signed_rank_cdf(n: int) -> FloatArray:
    """P(T+ <= t) for t = 0 .. n(n + 1) / 2: the exact null distribution of the Wilcoxon signed-rank statistic of
    ``n`` untied differences symmetric about zero.

    Rank j enters T+ with probability 1/2, independently, so the distribution is the convolution of the two-point
    distributions {0, j}, j = 1 .. n: a dynamic programme kept in probabilities (float64 holds any n). Cached per n;
    the returned array is read-only.
    """
    if n < 0:
        raise ValueError(f"the number of pairs must be >= 0, got {n}")
    pmf = np.ones(1)
    for j in range(1, n + 1):
        grown = np.zeros(pmf.size + j)
        grown[: pmf.size] += pmf
        grown[j:] += pmf
        pmf = grown * 0.5
    cdf = np.cumsum(pmf)
    cdf.setflags(write=False)
    return cdf


def _normal_moments(n: int) -> tuple[float, float]:
    """Mean and SD of T+ under the null."""
    return n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)


def _lower_tail(n: int, t: int) -> float:
    """P(T+ <= t): exact up to EXACT_MAX_PAIRS, else normal with continuity correction."""
    if t < 0:
        return 0.0
    if n <= EXACT_MAX_PAIRS:
        return float(signed_rank_cdf(n)[t])
    mean, sd = _normal_moments(n)
    return statistics.NormalDist().cdf((t + 0.5 - mean) / sd)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def interval_rank(n: int, confidence: float) -> int:
    """The k of the interval [W_(k), W_(N + 1 - k)] (1-based order statistics of the N Walsh averages of ``n``
    pairs); 0 when ``n`` pairs are too few for any finite interval at ``confidence``.

    k - 1 is the largest t with P(T+ <= t) <= (1 - confidence) / 2, the two-sided signed-rank test's lower critical
    value (8 for n = 10 at 95%). Exact up to EXACT_MAX_PAIRS pairs; beyond, t = floor(mean - 0.5 + z sd).
    """
    _check_confidence(confidence)
    tail = (1.0 - confidence) / 2.0
    if n <= EXACT_MAX_PAIRS:
        return int(np.searchsorted(signed_rank_cdf(n), tail * (1.0 + _TAIL_SLACK), side="right"))
    mean, sd = _normal_moments(n)
    return max(0, math.floor(mean - 0.5 + statistics.NormalDist().inv_cdf(tail) * sd) + 1)


def fewest_pairs(confidence: float) -> int:
    """The fewest pairs with a finite interval at ``confidence``: the smallest n with 2**-n <= (1 - confidence) / 2
    (then all pairs on one side of a shift are rare enough to reject it)."""
    _check_confidence(confidence)
    tail = (1.0 - confidence) / 2.0
    return max(1, math.ceil(-math.log2(tail * (1.0 + _TAIL_SLACK))))


def finite_array(values: Floats, what: str) -> FloatArray:
    """``values`` as a 1-D float array; ValueError, naming ``what``, if empty or not all finite."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"{what} must be a non-empty sequence of finite numbers, got {list(values)!r}")
    return x


def walsh_averages(d: Floats) -> FloatArray:
    """The n(n + 1) / 2 Walsh averages (d_i + d_j) / 2 over i <= j, sorted ascending."""
    x = finite_array(d, "log ratios")
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2.0)


def hodges_lehmann(d: Floats) -> float:
    """The Hodges-Lehmann shift: the median of the Walsh averages of ``d``."""
    return float(np.median(walsh_averages(d)))


@dataclass(frozen=True)
class ShiftInterval:
    """The Hodges-Lehmann shift of ``n`` paired log ratios and its distribution-free interval, log scale."""

    n: int
    estimate: float
    low: float  # -inf when n is below fewest_pairs(confidence)
    high: float  # +inf likewise
    confidence: float  # asked for
    coverage: float  # the interval's own coverage, 1 - 2 P(T+ <= k - 1) >= confidence (1.0 when infinite)


def shift_interval(d: Floats, confidence: float) -> ShiftInterval:
    """The Hodges-Lehmann shift of ``d`` and the signed-rank interval [W_(k), W_(N + 1 - k)] at ``confidence``."""
    walsh = walsh_averages(d)
    n = len(finite_array(d, "log ratios"))
    k = interval_rank(n, confidence)
    estimate = float(np.median(walsh))
    if k == 0:
        return ShiftInterval(n, estimate, -math.inf, math.inf, confidence, 1.0)
    coverage = 1.0 - 2.0 * _lower_tail(n, k - 1)
    return ShiftInterval(n, estimate, float(walsh[k - 1]), float(walsh[walsh.size - k]), confidence, coverage)


def signed_rank_p(d: Floats) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test of no shift (scipy.stats.wilcoxon, its default method:
    exact for small n without ties or zeros); 1.0 when every d is zero. Reported, not used to decide."""
    x = finite_array(d, "log ratios")
    if not np.any(x):
        return 1.0
    import scipy.stats  # type: ignore[import-untyped]  # lazily: importing the analysis layer stays cheap

    return float(scipy.stats.wilcoxon(x).pvalue)
