"""Pure-Python statistics for speculative decoding benchmarks (stdlib only, no torch/numpy).

Latencies are seconds per token of one request; speedups are ratios of latencies (or of
total times), so > 1 means the speculative case is faster than the verifier-only baseline.
The analytic model is Leviathan et al. (2023), "Fast Inference from Transformers via
Speculative Decoding": with per-token acceptance ``alpha``, block size ``k`` and draft cost
``c`` (one draft forward relative to one verifier forward), one verifier call yields
``(1 - alpha**(k+1)) / (1 - alpha)`` tokens on average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ALTERNATIVES = ("less", "greater", "two-sided")
# Largest len(x) * len(y) for which mann_whitney_u enumerates the exact null distribution.
EXACT_MAX_PAIRS = 400


# --------------------------------------------------------------------------- descriptive statistics


def _finite_values(values: Sequence[float], what: str) -> list[float]:
    """``values`` as floats; ValueError if empty or if any is NaN/infinite."""
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what} of an empty sequence is undefined; pass at least one value")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} needs finite values, got {bad[0]!r}; drop NaN/inf samples first")
    return out


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp``: the formula switches ends at t = 0.5 so both ends are hit exactly."""
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 <= q <= 100) by linear interpolation between closest ranks.

    Identical to ``numpy.percentile(values, q, method="linear")`` (numpy's default) for finite
    values: with the values sorted as ``s``, the position is ``h = (n - 1) * q / 100`` and the
    result ``s[floor(h)] + (h - floor(h)) * (s[floor(h) + 1] - s[floor(h)])``.
    Raises ValueError for empty input, non-finite values, or q outside [0, 100].
    """
    if not (isinstance(q, (int, float)) and 0.0 <= q <= 100.0):
        raise ValueError(f"percentile q must be a number in [0, 100], got {q!r}")
    ordered = sorted(_finite_values(values, "percentile"))
    position = (len(ordered) - 1) * (q / 100.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return _lerp(ordered[low], ordered[high], position - low)


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one sample (percentiles as in :func:`percentile`)."""

    n: int
    mean: float
    p5: float
    p50: float
    p95: float
    min: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    """Count, mean, 5th/50th/95th percentiles, min and max of ``values`` (ValueError if empty)."""
    data = _finite_values(values, "summarize")
    return Summary(
        n=len(data),
        mean=math.fsum(data) / len(data),
        p5=percentile(data, 5),
        p50=percentile(data, 50),
        p95=percentile(data, 95),
        min=min(data),
        max=max(data),
    )


# --------------------------------------------------------------------------- speedups


def _positive(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return value


def speedup(baseline: Sequence[float], case: Sequence[float]) -> float:
    """Median baseline latency over median case latency (latencies in s/token, one per request).

    Medians, not means, so that one slow request (a GC pause, a cold cache) does not move the
    ratio. ValueError for empty input or a non-positive median.
    """
    base = _positive(percentile(baseline, 50), "median baseline latency")
    spec = _positive(percentile(case, 50), "median case latency")
    return base / spec


def aggregate_speedup(baseline_total_s: float, case_total_s: float) -> float:
    """Total baseline time over total case time for the same requests (ValueError if either <= 0)."""
    return _positive(baseline_total_s, "baseline_total_s") / _positive(case_total_s, "case_total_s")


def relative_change(old: float, new: float) -> float:
    """``(new - old) / old``: e.g. -0.1 is a 10 % drop (for positive ``old``).

    ``old == 0`` raises ValueError: a relative change from zero is undefined, so compare such
    metrics by absolute difference instead. The sign follows the formula as written, so for a
    negative ``old`` an increase gives a negative result.
    """
    if old == 0:
        raise ValueError(f"relative change from old=0 to new={new!r} is undefined; "
                         "compare by absolute difference instead")
    return (new - old) / old


def efficiency(measured: float, expected: float) -> float | None:
    """``measured / expected`` (e.g. measured speedup over the analytic one).

    None when the ratio carries no information: ``expected`` not positive, or either value
    not finite.
    """
    if not (math.isfinite(measured) and math.isfinite(expected)) or expected <= 0:
        return None
    return measured / expected


# --------------------------------------------------------------------------- analytic model


def _check_alpha_k(alpha: float, k: int, min_k: int) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be an acceptance rate in [0, 1], got {alpha!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < min_k:
        raise ValueError(f"k must be an integer >= {min_k}, got {k!r}")


def _geometric(alpha: float, n: int) -> float:
    """``sum(alpha**i for i in range(n))`` = ``(1 - alpha**n) / (1 - alpha)``, limit n at 1.

    Written with expm1/log1p because the textbook quotient cancels catastrophically as
    alpha -> 1 (1 - alpha is exact there, by Sterbenz's lemma).
    """
    if n == 0 or alpha == 0.0:
        return float(min(n, 1))
    if alpha == 1.0:
        return float(n)
    one_minus = 1.0 - alpha
    return -math.expm1(n * math.log1p(-one_minus)) / one_minus


def expected_tokens_per_call(alpha: float, k: int) -> float:
    """Expected tokens emitted per verifier call: ``(1 - alpha**(k+1)) / (1 - alpha)``.

    At ``alpha == 1`` the limit ``k + 1``; ``alpha`` in [0, 1], ``k >= 0`` (k = 0 gives 1).
    """
    _check_alpha_k(alpha, k, 0)
    return _geometric(alpha, k + 1)


def expected_accepted_per_call(alpha: float, k: int) -> float:
    """Expected draft tokens accepted per verifier call: ``alpha (1 - alpha**k) / (1 - alpha)``.

    At ``alpha == 1`` the limit ``k``; equals ``expected_tokens_per_call(alpha, k) - 1``.
    """
    _check_alpha_k(alpha, k, 0)
    return alpha * _geometric(alpha, k)


def expected_acceptance(alpha: float, k: int) -> float:
    """Expected draft acceptance (accepted / proposed): ``expected_accepted_per_call / k``, k >= 1."""
    _check_alpha_k(alpha, k, 1)
    return expected_accepted_per_call(alpha, k) / k


def expected_speedup(alpha: float, k: int, c: float, verify_cost: float = 1.0) -> float:
    """Expected walltime speedup: ``expected_tokens_per_call / (k * c + verify_cost)``.

    ``c`` is the cost of one draft forward relative to one verifier step (>= 0);
    ``verify_cost`` is v(k+1), the cost of verifying k + 1 tokens in one forward relative to
    one verifier step (> 0). Leviathan et al.'s formula is ``verify_cost = 1``.
    """
    if not (math.isfinite(c) and c >= 0):
        raise ValueError(f"draft cost c must be a finite number >= 0, got {c!r}")
    _positive(verify_cost, "verify_cost")
    return expected_tokens_per_call(alpha, k) / (k * c + verify_cost)


# --------------------------------------------------------------------------- histograms


def merge_counts(lists: Sequence[Sequence[int]]) -> list[int]:
    """Elementwise sum of count lists; shorter lists count as padded with zeros."""
    width = max((len(counts) for counts in lists), default=0)
    merged = [0] * width
    for counts in lists:
        for i, count in enumerate(counts):
            merged[i] += count
    return merged


def rate(numerators: Sequence[float], denominators: Sequence[float]) -> list[float | None]:
    """Elementwise ``numerators[i] / denominators[i]``; None where the denominator is 0.

    The lists may differ in length, as in :func:`merge_counts`: the shorter one counts as
    padded with zeros (so a missing denominator gives None).
    """
    width = max(len(numerators), len(denominators))
    nums = list(numerators) + [0] * (width - len(numerators))
    dens = list(denominators) + [0] * (width - len(denominators))
    return [None if den == 0 else num / den for num, den in zip(nums, dens)]


# --------------------------------------------------------------------------- Mann-Whitney U


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """1-based ranks (ties get their average rank) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    groups: list[int] = []
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for i in order[start:stop + 1]:
            ranks[i] = (start + stop) / 2 + 1
        groups.append(stop - start + 1)
        start = stop + 1
    return ranks, groups


def _u_counts(m: int, n: int) -> list[int]:
    """``counts[u]``: orderings of m x's and n y's whose U (pairs with x > y) equals u.

    The standard recursion c(u; i, j) = c(u - j; i - 1, j) + c(u; i, j - 1): the largest of
    the i + j values is either an x (beating all j y's) or a y (beating no x).
    """
    prev = [[1] for _ in range(n + 1)]  # i = 0: U is always 0
    for i in range(1, m + 1):
        row = [[1]]  # j = 0: U is always 0
        for j in range(1, n + 1):
            with_x, with_y = prev[j], row[j - 1]
            counts = [0] * (i * j + 1)
            for u, c in enumerate(with_y):
                counts[u] += c
            for u, c in enumerate(with_x):
                counts[u + j] += c
            row.append(counts)
        prev = row
    return prev[n]


def _exact_p(u: float, m: int, n: int, alternative: str) -> float:
    counts = _u_counts(m, n)
    total = math.comb(m + n, m)
    u_int = int(u)  # exact path has no ties, so U is an integer
    cdf = sum(counts[:u_int + 1]) / total
    sf = sum(counts[u_int:]) / total
    if alternative == "less":
        return cdf
    if alternative == "greater":
        return sf
    return min(1.0, 2.0 * min(cdf, sf))


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _asymptotic_p(u: float, m: int, n: int, groups: Sequence[int], alternative: str) -> float:
    """scipy's asymptotic p: normal approximation with tie and continuity corrections."""
    total = m + n
    tie_term = sum(t ** 3 - t for t in groups)
    sigma = math.sqrt(m * n / 12 * ((total + 1) - tie_term / (total * (total - 1))))
    # As scipy: take the upper tail of the statistic that is large under H1.
    u_tail = {"greater": u, "less": m * n - u, "two-sided": max(u, m * n - u)}[alternative]
    numerator = u_tail - m * n / 2 - 0.5
    if sigma == 0:  # every value tied: no evidence either way
        return 1.0
    factor = 2.0 if alternative == "two-sided" else 1.0
    return min(1.0, max(0.0, factor * _normal_sf(numerator / sigma)))


def mann_whitney_u(x: Sequence[float], y: Sequence[float],
                   alternative: str = "less") -> tuple[float, float]:
    """Mann-Whitney U test: ``(U of x, p-value)``, as ``scipy.stats.mannwhitneyu``.

    U counts the pairs (x_i, y_j) with x_i > y_j, ties counting 1/2. ``alternative``: "less"
    (H1: x tends to be smaller than y, p = P(U <= observed)), "greater", or "two-sided"
    (twice the smaller tail, at most 1). With no ties in x + y and ``len(x) * len(y) <= 400``
    the p-value is exact (the null distribution of U counted by the standard recursion);
    otherwise it is the normal approximation with tie and continuity corrections
    (scipy's ``method="asymptotic"``, ``use_continuity=True``). Unlike scipy's "auto", the
    exact path runs up to 400 pairs, not only for samples of at most 8.
    Raises ValueError for an empty sample, non-finite values, or an unknown alternative.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")
    xs = _finite_values(x, "mann_whitney_u x")
    ys = _finite_values(y, "mann_whitney_u y")
    m, n = len(xs), len(ys)
    ranks, groups = _ranks(xs + ys)
    u = math.fsum(ranks[:m]) - m * (m + 1) / 2
    if max(groups) == 1 and m * n <= EXACT_MAX_PAIRS:
        return u, _exact_p(u, m, n, alternative)
    return u, _asymptotic_p(u, m, n, groups, alternative)
