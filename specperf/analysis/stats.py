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

# --------------------------------------------------------------------------- descriptive statistics


def finite_values(values: Sequence[float], what: str) -> list[float]:
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
    ordered = sorted(finite_values(values, "percentile"))
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
    data = finite_values(values, "summarize")
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
