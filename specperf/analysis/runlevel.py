"""Run-level statistics for the timing gate: the run, not the round, is the unit of comparison.

Rounds inside one run share that run's drift (process start, allocator and cache state, the neighbours on a shared
machine), so a run's median per-round speedup is known much more tightly than the medians of whole runs of unchanged
code agree with each other (docs/gates.md, "Gate quality, measured", has the figures). A cross-run gate therefore
compares the new run's median with the *distribution of run medians*: measured from several baseline runs when it
has them, or taken from a stated prior spread when it has only one.

Speedups are ratios, so the statistics work on their logarithms: a drift of x% up or down is symmetric there.
Stdlib only (no numpy, no scipy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

_BISECTION_STEPS = 200
_CF_MAX_ITER = 300
_CF_EPS = 1e-15


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, _CF_MAX_ITER + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _CF_EPS:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"incomplete_beta needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on :func:`student_t_cdf`."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    lo, hi = -1e6, 1e6
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class RunBound:
    """The lowest median speedup a new run of unchanged code reaches with probability 1 - alpha.

    ``center`` is the baseline runs' geometric mean median speedup, ``spread`` the SD of log run medians used (the
    baseline runs' own when there are ``min_runs`` of them, else the prior), ``source`` which of the two it was.
    """

    center: float
    spread: float
    n_runs: int
    quantile: float  # the t (measured spread) or z (prior spread) quantile used
    bound: float
    source: str  # "baseline runs" or "prior run_sd"


def lower_prediction_bound(run_medians: Sequence[float], alpha: float, *, prior_sd: float,
                           min_runs: int = 3) -> RunBound:
    """One-sided (1 - alpha) lower prediction bound for the median speedup of one new run.

    With at least ``min_runs`` baseline runs: the normal prediction interval on log medians, mean - t(1 - alpha,
    n - 1) * s * sqrt(1 + 1/n), s their sample SD. With fewer: the same with the prior SD ``prior_sd`` and the
    normal quantile, since one or two runs cannot tell how much whole runs drift.
    """
    if not run_medians or any(not (math.isfinite(m) and m > 0) for m in run_medians):
        raise ValueError(f"run medians must be positive and finite, got {list(run_medians)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    logs = [math.log(m) for m in run_medians]
    n, mean = len(logs), statistics.fmean(logs)
    if n >= min_runs:
        spread, quantile, source = statistics.stdev(logs), student_t_quantile(1.0 - alpha, n - 1), "baseline runs"
    else:
        spread, quantile, source = prior_sd, statistics.NormalDist().inv_cdf(1.0 - alpha), "prior run_sd"
    bound = mean - quantile * spread * math.sqrt(1.0 + 1.0 / n)
    return RunBound(math.exp(mean), spread, n, quantile, math.exp(bound), source)
