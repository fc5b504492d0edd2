"""Tests for the A/B statistics (specperf.analysis.signed_rank, specperf.analysis.ab): hand-computed values, the
published signed-rank table, scipy as an independent reference, and seeded simulations with binomial error bars."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from specperf.analysis.ab import (
    DIFFERENT,
    SAME,
    SPEEDUP,
    UNKNOWN,
    WALL,
    AbPlan,
    AbResult,
    PairedRounds,
    WorkDifference,
    abba_order,
    compare_metric,
    compare_work,
    decide,
    failure_message,
    log_ratios,
    next_step,
    session_confidence,
)
from specperf.analysis.signed_rank import (
    EXACT_MAX_PAIRS,
    fewest_pairs,
    hodges_lehmann,
    interval_rank,
    shift_interval,
    signed_rank_cdf,
    signed_rank_p,
    walsh_averages,
)
from specperf.records import DecodeResult

ROOT = Path(__file__).resolve().parents[1]
EDGE = math.log1p(0.02)  # log(1 + min_effect) at min_effect = 2%


def binomial_slack(p: float, trials: int, sds: float = 4.0) -> float:
    return sds * math.sqrt(p * (1.0 - p) / trials)


# =========================================================================== the signed-rank distribution


@pytest.mark.parametrize("n", range(0, 9))
def test_signed_rank_cdf_equals_enumeration(n: int) -> None:
    sums = [sum(subset) for r in range(n + 1) for subset in itertools.combinations(range(1, n + 1), r)]
    counts = np.bincount(sums, minlength=n * (n + 1) // 2 + 1)
    assert signed_rank_cdf(n) == pytest.approx(np.cumsum(counts) / 2**n, abs=1e-15)


def test_signed_rank_cdf_n3_by_hand() -> None:
    # T+ of ranks {1, 2, 3}: sums 0 1 2 3 3 4 5 6 over the 8 sign patterns.
    assert list(signed_rank_cdf(3) * 8) == pytest.approx([1, 2, 3, 5, 6, 7, 8])


@pytest.mark.parametrize("t_plus", [0, 3, 8, 9, 20, 27])
def test_signed_rank_cdf_matches_scipy_exact(t_plus: int) -> None:
    n = 10
    positive = _ranks_summing_to(t_plus, n)
    d = [r if r in positive else -r for r in range(1, n + 1)]
    p = scipy.stats.wilcoxon(d, alternative="less", method="exact").pvalue
    assert signed_rank_cdf(n)[t_plus] == pytest.approx(p, rel=1e-12)


def _ranks_summing_to(total: int, n: int) -> set[int]:
    """Distinct ranks in 1..n summing to ``total`` (greedy from the top)."""
    chosen: set[int] = set()
    for r in range(n, 0, -1):
        if r <= total:
            chosen.add(r)
            total -= r
    assert total == 0
    return chosen


# Lower critical values of the two-sided signed-rank test (reject when T <= value), from the published tables
# (e.g. Hollander & Wolfe; "-" where n is too small): the interval's k is the value + 1.
TABLE_95 = {6: 0, 7: 2, 8: 3, 9: 5, 10: 8, 11: 10, 12: 13, 13: 17, 14: 21, 15: 25, 20: 52, 25: 89, 30: 137}
TABLE_99 = {8: 0, 9: 1, 10: 3, 11: 5, 12: 7, 13: 9, 14: 12, 15: 15, 20: 37, 25: 68, 30: 109}


@pytest.mark.parametrize(("confidence", "table"), [(0.95, TABLE_95), (0.99, TABLE_99)])
def test_interval_rank_is_the_published_critical_value_plus_one(confidence: float, table: dict[int, int]) -> None:
    assert {n: interval_rank(n, confidence) - 1 for n in table} == table
    too_few = min(table) - 1
    assert interval_rank(too_few, confidence) == 0
    assert fewest_pairs(confidence) == min(table)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99, 1 - 0.05 / 80, 1 - 0.05 / 800])
def test_fewest_pairs_is_where_a_finite_interval_starts(confidence: float) -> None:
    n = fewest_pairs(confidence)
    assert interval_rank(n, confidence) == 1
    assert interval_rank(n - 1, confidence) == 0


@pytest.mark.parametrize(("n", "confidence", "k"), [(5, 0.9375, 1), (10, 1 - 2 * 25 / 1024, 9),
                                                   (12, 1 - 2 * 87 / 4096, 14)])
def test_a_confidence_equal_to_an_exact_coverage_is_reached(n: int, confidence: float, k: int) -> None:
    assert interval_rank(n, confidence) == k


@pytest.mark.parametrize("n", [EXACT_MAX_PAIRS + 1, 300])
@pytest.mark.parametrize("confidence", [0.95, 1 - 0.05 / 80])
def test_normal_approximation_is_close_to_exact(n: int, confidence: float) -> None:
    cdf = signed_rank_cdf(n)
    exact = int(np.searchsorted(cdf, (1 - confidence) / 2 * (1 + 1e-9), side="right"))
    k = interval_rank(n, confidence)
    assert exact - k >= -2
    assert (exact - k) <= 0.002 * n * (n + 1) / 2
    assert 1 - 2 * cdf[k - 1] >= confidence - 1e-3


# =========================================================================== Hodges-Lehmann and its interval


def test_hodges_lehmann_and_interval_n5_by_hand() -> None:
    d = [1.0, 2.0, 3.0, 4.0, 10.0]
    # The 15 Walsh averages (d_i + d_j) / 2, i <= j, sorted.
    walsh = [1, 1.5, 2, 2, 2.5, 2.5, 3, 3, 3.5, 4, 5.5, 6, 6.5, 7, 10]
    assert list(walsh_averages(d)) == walsh
    assert hodges_lehmann(d) == 3.0  # the 8th of 15; the mean, 4, follows the outlier
    # 90%: P(T+ <= 0) = 1/32 <= 0.05 < P(T+ <= 1) = 2/32, so k = 1: [min, max] with coverage 1 - 2/32.
    ninety = shift_interval(d, 0.90)
    assert (ninety.low, ninety.estimate, ninety.high, ninety.coverage) == (1.0, 3.0, 10.0, 0.9375)
    # 95%: 1/32 > 0.025, so five pairs cannot give a finite interval.
    assert (shift_interval(d, 0.95).low, shift_interval(d, 0.95).high) == (-math.inf, math.inf)


def test_interval_n10_is_the_9th_and_47th_walsh_average() -> None:
    # d = 0..9: averages (i + j) / 2; counts with i + j = 0, 1, 2, 3, 4 are 1, 1, 2, 2, 3, so the 9th smallest is 2.0,
    # and by the reflection i -> 9 - i the 47th (9th largest) is 7.0. Coverage 1 - 2 * 25/1024.
    s = shift_interval(np.arange(10.0), 0.95)
    assert (s.low, s.estimate, s.high) == (2.0, 4.5, 7.0)
    assert s.coverage == pytest.approx(1 - 2 * 25 / 1024)


def test_log_ratios_and_ratio_scale() -> None:
    a = [2.0, 4.0, 1.0]
    assert list(log_ratios(a, [2.2, 4.4, 1.1])) == pytest.approx([math.log(1.1)] * 3)
    with pytest.raises(ValueError, match="as many A as B"):
        log_ratios(a, [1.0])
    with pytest.raises(ValueError, match="positive"):
        log_ratios(a, [1.0, 0.0, 1.0])


@pytest.mark.parametrize("noise", ["lognormal", "laplace"])
def test_interval_covers_the_true_shift_at_its_stated_rate(noise: str) -> None:
    rng = np.random.default_rng(20240607)
    draws, n, shift = 2000, 12, 0.03
    covered = 0
    for _ in range(draws):
        drift = rng.normal(0.0, 0.05, n)  # shared by both rounds of a pair: cancels in the log ratio
        draw = rng.normal if noise == "lognormal" else rng.laplace
        a = np.exp(drift + draw(0.0, 0.02, n))
        b = np.exp(drift + shift + draw(0.0, 0.02, n))
        s = shift_interval(log_ratios(a, b), 0.95)
        covered += s.low <= shift <= s.high
    expected = shift_interval(np.arange(12.0), 0.95).coverage  # exact: 1 - 2 P(T+ <= 13) at n = 12
    assert expected == pytest.approx(1 - 2 * 87 / 4096)
    assert abs(covered / draws - expected) <= binomial_slack(expected, draws)


def test_signed_rank_p_is_scipys() -> None:
    d = [0.01, -0.02, 0.03, 0.04, 0.05, -0.006, 0.07]
    assert signed_rank_p(d) == scipy.stats.wilcoxon(d).pvalue
    assert signed_rank_p([0.0, 0.0, 0.0]) == 1.0


# =========================================================================== decisions


@pytest.mark.parametrize(("low", "high", "higher_is_better", "expected"), [
    (EDGE + 1e-6, 0.10, False, (DIFFERENT, "slower")),  # wall rose beyond 2%
    (-0.10, -EDGE - 1e-6, False, (DIFFERENT, "faster")),
    (-0.10, -EDGE - 1e-6, True, (DIFFERENT, "slower")),  # speedup fell beyond 2%
    (EDGE + 1e-6, 0.10, True, (DIFFERENT, "faster")),
    (-EDGE, EDGE, False, (SAME, None)),  # inclusive at the margin
    (0.01, EDGE + 1e-6, False, (UNKNOWN, None)),  # above zero, but not surely beyond 2%
    (EDGE - 1e-6, 0.05, False, (UNKNOWN, None)),
    (-0.05, 0.05, True, (UNKNOWN, None)),
])
def test_decide(low: float, high: float, higher_is_better: bool, expected: tuple[str, str | None]) -> None:
    assert decide(low, high, min_effect=0.02, same_margin=0.02, higher_is_better=higher_is_better) == expected


def test_decide_checks_different_before_same() -> None:
    # With min_effect 0 (any sure change) and a 2% equivalence band, a sure 1% slowdown is DIFFERENT.
    assert decide(0.005, 0.015, min_effect=0.0, same_margin=0.02, higher_is_better=False) == (DIFFERENT, "slower")
    assert decide(-0.005, 0.015, min_effect=0.0, same_margin=0.02, higher_is_better=False) == (SAME, None)


def _pattern(n: int, center: float, spread: float) -> list[float]:
    """n log ratios evenly spread over center +- spread (symmetric, deterministic)."""
    return list(center + spread * np.linspace(-1.0, 1.0, n))


def _sides(d: list[float]) -> tuple[list[float], list[float]]:
    a = [1.0 + 0.1 * (i % 3) for i in range(len(d))]
    return a, [x * math.exp(v) for x, v in zip(a, d)]


@pytest.mark.parametrize(("center", "spread", "decision", "failed"), [
    (math.log(1.10), 0.01, DIFFERENT, True),
    (math.log(0.90), 0.01, DIFFERENT, False),
    (0.0, 0.004, SAME, False),
    (0.02, 0.03, UNKNOWN, False),
])
def test_compare_metric_decisions_on_constructed_rounds(center: float, spread: float, decision: str,
                                                        failed: bool) -> None:
    a, b = _sides(_pattern(12, center, spread))
    result = compare_metric("c", WALL, a, b, confidence=0.99, min_effect=0.02)
    assert (result.decision, result.failed) == (decision, failed)
    assert result.ratio == pytest.approx(math.exp(center))
    assert result.low < result.ratio < result.high
    assert (result.a_median, result.b_median) == (float(np.median(a)), float(np.median(b)))


def test_a_drop_in_speedup_is_a_slowdown() -> None:
    a, b = _sides(_pattern(12, math.log(0.9), 0.01))
    result = compare_metric("c", SPEEDUP, a, b, confidence=0.99, min_effect=0.02)
    assert (result.decision, result.direction, result.failed) == (DIFFERENT, "slower", True)


SESSION = 1 - 0.05 / (20 * 4)  # 10 cases x 2 metrics, 4 looks


def _draws(shift: float, pair_sd: float, n: int, draws: int, seed: int) -> list[AbResult]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        drift = rng.normal(0.0, 0.05, n)
        a = np.exp(drift + rng.normal(0.0, pair_sd / math.sqrt(2), n))
        b = np.exp(drift + shift + rng.normal(0.0, pair_sd / math.sqrt(2), n))
        out.append(compare_metric("c", WALL, a, b, confidence=SESSION, min_effect=0.02))
    return out


def test_power_a_5_percent_slowdown_with_2_percent_pair_noise_at_20_pairs() -> None:
    results = _draws(math.log(1.05), 0.02, 20, 200, seed=1)
    caught = sum(r.failed for r in results)
    assert caught >= 184  # about 97% by a 10,000-draw simulation; 184 of 200 is 4 binomial SDs below


def test_no_shift_is_never_different() -> None:
    results = _draws(0.0, 0.02, 20, 200, seed=2)
    assert not [r for r in results if r.decision == DIFFERENT]


# =========================================================================== the session's design


def test_bonferroni_level_and_looks() -> None:
    assert session_confidence(0.05, 20, 4) == 1 - 0.05 / 80
    plan = AbPlan(n_tests=20)
    assert plan.look_sizes == (12, 18, 24)
    assert (plan.looks, plan.confidence, plan.margin) == (3, 1 - 0.05 / 60, 0.02)
    assert AbPlan(n_tests=4, first_pairs=10, block_pairs=4, max_pairs=20).look_sizes == (10, 14, 18, 20)
    with pytest.raises(ValueError, match="needs at least 15 pairs"):
        AbPlan(n_tests=200)  # 1 - 0.05 / 800: 2**-14 > 0.05 / 1600


def test_session_false_alarms_stay_below_alpha_over_cases_and_looks() -> None:
    # 400 A/A sessions of 10 tests, each looked at 3 times; a "miss" is any interval that excludes the true 0.
    rng = np.random.default_rng(3)
    plan = AbPlan(n_tests=10, alpha=0.05, first_pairs=12, block_pairs=6, max_pairs=24)
    sessions, missed = 400, 0
    for _ in range(sessions):
        d = rng.normal(0.0, 0.02, (10, plan.max_pairs))
        missed += any(not (s.low <= 0.0 <= s.high) for s in
                      (shift_interval(row[:size], plan.confidence) for row in d for size in plan.look_sizes))
    assert missed / sessions <= 0.05 + binomial_slack(0.05, sessions, 3.0)


def _rounds(d_wall: list[float], d_speedup: list[float]) -> PairedRounds:
    a_wall, b_wall = _sides(d_wall)
    a_speedup, b_speedup = _sides(d_speedup)
    return PairedRounds("case[k4]", tuple(a_wall), tuple(b_wall), tuple(a_speedup), tuple(b_speedup))


def test_next_step_asks_for_a_block_then_stops_at_the_cap() -> None:
    plan = AbPlan(n_tests=2, first_pairs=12, block_pairs=6, max_pairs=18)
    unsure = _rounds(_pattern(12, 0.02, 0.03), _pattern(12, 0.0, 0.003))
    step = next_step(unsure, plan)
    assert (step.look, step.more_pairs, step.done) == (1, 6, False)
    assert [r.decision for r in step.results] == [UNKNOWN, SAME]
    last = next_step(_rounds(_pattern(18, 0.02, 0.03), _pattern(18, 0.0, 0.003)), plan)
    assert (last.look, last.more_pairs, last.done, last.failed) == (2, 0, True, False)
    assert last.results[0].decision == UNKNOWN


def test_next_step_stops_on_a_slowdown_or_when_all_is_decided() -> None:
    plan = AbPlan(n_tests=2)
    slow = next_step(_rounds(_pattern(12, math.log(1.1), 0.01), _pattern(12, 0.02, 0.05)), plan)
    assert (slow.done, slow.failed) == (True, True)
    assert [r.decision for r in slow.results] == [DIFFERENT, UNKNOWN]
    same = next_step(_rounds(_pattern(12, 0.0, 0.003), _pattern(12, 0.0, 0.003)), plan)
    assert (same.done, same.failed, [r.decision for r in same.results]) == (True, False, [SAME, SAME])
    with pytest.raises(ValueError, match="not a planned look"):
        next_step(_rounds(_pattern(13, 0.0, 0.003), _pattern(13, 0.0, 0.003)), plan)


def test_abba_order() -> None:
    assert abba_order(3) == (("A", 0), ("B", 0), ("B", 1), ("A", 1), ("A", 2), ("B", 2))


def test_failure_message_names_case_ratio_interval_and_rounds() -> None:
    result = AbResult("perf/test_speculative.py::test_case[draft-k4]", "wall", 12, 1.25, 1.3125, 1.05, 1.031,
                      1.0712, DIFFERENT, "slower", 1 - 0.05 / 80, 0.02, 0.0005)
    assert failure_message(result) == (
        "perf/test_speculative.py::test_case[draft-k4]: wall B/A 1.0500 [1.0310, 1.0712] at 99.94% confidence, "
        "DIFFERENT slower (min effect 2%), 12 paired rounds (A median 1.25, B median 1.312)")


# =========================================================================== deterministic work


def _record(tokens: list[int], accepted: int, calls: int = 3) -> DecodeResult:
    return DecodeResult(tokens=tokens, k=4, prompt_len=5, verifier_calls=calls, draft_calls=8, verifier_tokens=20,
                        draft_tokens=12, proposed=8, accepted=accepted, accept_counts=[1, 0, 1], position_proposed=None,
                        position_accepted=None, wall_s=0.5, ttft_s=0.1)


def test_compare_work_identical_is_empty_and_names_each_difference() -> None:
    a = [_record([1, 2, 3, 4], 5), _record([7, 8], 2)]
    assert compare_work("c", a, [_record([1, 2, 3, 4], 5), _record([7, 8], 2)]) == []
    b = [_record([1, 2, 9, 4], 5), _record([7, 8], 1, calls=4)]
    diffs = compare_work("c", a, b)
    assert diffs == [WorkDifference("c", 0, "tokens", [1, 2, 3, 4], [1, 2, 9, 4]),
                     WorkDifference("c", 1, "verifier_calls", 3, 4), WorkDifference("c", 1, "accepted", 2, 1)]
    assert diffs[0].message() == "c: request 0 tokens differ from position 2 (A [3], B [9]; lengths 4 and 4)"
    assert diffs[2].message() == "c: request 1 accepted A 2, B 1"


def test_compare_work_takes_plain_dicts_and_counts_requests() -> None:
    a = [{"tokens": [1], "verifier_calls": 1, "proposed": None, "accepted": None, "accept_counts": None}] * 2
    b = [dict(a[0], proposed=4)]
    assert compare_work("c", a, b) == [WorkDifference("c", None, "requests", 2, 1),
                                       WorkDifference("c", 0, "proposed", None, 4)]
    with pytest.raises(ValueError, match="side B's request 0 has no field 'tokens'"):
        compare_work("c", a[:1], [{"verifier_calls": 1}])


@pytest.mark.slow
def test_importing_the_ab_module_leaves_scipy_unimported() -> None:
    code = "import sys, specperf.analysis.ab; print('scipy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
