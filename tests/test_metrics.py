"""Tests for specperf.analysis.stats: exact, hand-computed values; numpy only as an independent reference."""

from __future__ import annotations

import ast
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specperf.analysis import stats as metrics
from specperf.analysis.stats import (
    Summary,
    aggregate_speedup,
    efficiency,
    expected_acceptance,
    expected_accepted_per_call,
    expected_speedup,
    expected_tokens_per_call,
    merge_counts,
    percentile,
    rate,
    relative_change,
    speedup,
    summarize,
)

METRICS_FILE = Path(metrics.__file__)


# --------------------------------------------------------------------------- imports


def test_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(METRICS_FILE.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "math", "statistics", "dataclasses", "collections"}, roots


@pytest.mark.slow
def test_module_loads_without_torch_numpy_or_pytest() -> None:
    # specperf's public API is lazy, so importing the statistics module loads nothing heavy.
    code = (
        "import sys\n"
        "from specperf.analysis import stats\n"
        "assert stats.percentile([1, 2, 3, 4], 50) == 2.5\n"
        "bad = [m for m in ('torch', 'numpy', 'pytest') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- percentile / summarize


def test_percentile_hand_computed() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 25) == 1.75  # h = 3 * 0.25 = 0.75 -> 1 + 0.75 * (2 - 1)
    assert percentile(range(1, 21), 95) == pytest.approx(19.05, abs=1e-12)  # h = 19 * 0.95 = 18.05
    assert percentile([1, 2, 3], 0) == 1 and percentile([1, 2, 3], 100) == 3
    assert percentile([7.5], 37) == 7.5


def test_percentile_matches_numpy_linear() -> None:
    rng = random.Random(1)
    for _ in range(200):
        values = [rng.uniform(-100, 100) for _ in range(rng.randint(1, 15))]
        q = rng.choice([0, 5, 50, 95, 100, rng.uniform(0, 100)])
        assert percentile(values, q) == float(np.percentile(values, q, method="linear"))


@pytest.mark.parametrize("values, q", [([], 50), ([1.0], -1), ([1.0], 100.5), ([1.0, math.nan], 50)])
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_summarize() -> None:
    summary = summarize(range(1, 21))
    assert summary.n == 20 and summary.mean == 10.5 and summary.p50 == 10.5
    assert summary.p5 == pytest.approx(1.95, abs=1e-12)  # h = 19 * 0.05 = 0.95
    assert summary.p95 == pytest.approx(19.05, abs=1e-12)
    assert (summary.min, summary.max) == (1, 20)
    assert summarize([2.0]) == Summary(n=1, mean=2.0, p5=2.0, p50=2.0, p95=2.0, min=2.0, max=2.0)
    with pytest.raises(ValueError):
        summarize([])


# --------------------------------------------------------------------------- speedups and changes


def test_speedup_uses_medians() -> None:
    assert speedup([0.2, 0.1, 0.3], [0.1, 0.05, 9.0]) == 2.0  # the 9 s outlier does not matter
    assert speedup([1.0, 2.0], [0.5, 1.0]) == 2.0  # medians 1.5 / 0.75
    with pytest.raises(ValueError):
        speedup([], [1.0])
    with pytest.raises(ValueError):
        speedup([1.0], [0.0])


def test_aggregate_speedup_and_relative_change() -> None:
    assert aggregate_speedup(12.0, 4.0) == 3.0
    with pytest.raises(ValueError):
        aggregate_speedup(1.0, 0.0)
    assert relative_change(2.0, 1.5) == -0.25
    assert relative_change(4.0, 5.0) == 0.25
    with pytest.raises(ValueError, match="undefined"):
        relative_change(0.0, 1.0)


def test_efficiency() -> None:
    assert efficiency(2.0, 2.5) == 0.8
    assert efficiency(1.0, 0.0) is None
    assert efficiency(math.nan, 1.0) is None
    assert efficiency(1.0, math.inf) is None


# --------------------------------------------------------------------------- analytic model


def test_expected_tokens_and_acceptance_hand_computed() -> None:
    # 1 + 0.85 + 0.85^2 + 0.85^3 + 0.85^4 = 1 + 0.85 + 0.7225 + 0.614125 + 0.52200625
    assert expected_tokens_per_call(0.85, 4) == pytest.approx(3.70863125, abs=1e-12)
    assert expected_accepted_per_call(0.85, 4) == pytest.approx(2.70863125, abs=1e-12)
    assert expected_acceptance(0.85, 4) == pytest.approx(2.70863125 / 4, abs=1e-12)
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1.75, abs=1e-12)
    assert expected_accepted_per_call(0.5, 2) == pytest.approx(0.75, abs=1e-12)


def test_expected_limits() -> None:
    assert expected_tokens_per_call(1.0, 4) == 5.0
    assert expected_accepted_per_call(1.0, 4) == 4.0 and expected_acceptance(1.0, 4) == 1.0
    assert expected_tokens_per_call(0.0, 4) == 1.0 and expected_accepted_per_call(0.0, 4) == 0.0
    assert expected_tokens_per_call(0.7, 0) == 1.0
    alpha = 1 - 1e-9
    d = 1.0 - alpha  # exact in binary; the series is 5 - 10 d + 10 d^2 - ...
    assert expected_tokens_per_call(alpha, 4) == pytest.approx(5 - 10 * d + 10 * d * d, abs=1e-12)


def test_expected_speedup() -> None:
    assert expected_speedup(0.85, 4, 0.1) == pytest.approx(3.70863125 / 1.4, abs=1e-12)
    assert expected_speedup(0.85, 4, 0.1, verify_cost=1.2) == pytest.approx(3.70863125 / 1.6, abs=1e-12)
    assert expected_speedup(1.0, 4, 0.0) == 5.0


@pytest.mark.parametrize("call", [
    lambda: expected_tokens_per_call(1.1, 4),
    lambda: expected_tokens_per_call(0.5, -1),
    lambda: expected_acceptance(0.5, 0),
    lambda: expected_speedup(0.5, 4, -0.1),
    lambda: expected_speedup(0.5, 4, 0.1, verify_cost=0.0),
])
def test_analytic_model_rejects_bad_input(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------- histograms


def test_merge_counts_and_rate() -> None:
    assert merge_counts([[1, 2], [3], [0, 0, 5]]) == [4, 2, 5]
    assert merge_counts([]) == []
    assert rate([1, 2, 0], [2, 0, 4]) == [0.5, None, 0.0]
    assert rate([1], [2, 4]) == [0.5, 0.0]  # a missing numerator counts as 0
    assert rate([1, 2], [2]) == [0.5, None]  # a missing denominator counts as 0
