"""tools/gate_quality.py's Mann-Whitney U test, the retired round-level gate it keeps for its "before" column:
exact, hand-computed values and a brute-force enumeration."""

from __future__ import annotations

import itertools
import math
import random
from statistics import NormalDist

import pytest

from tools.gate_quality import before_rule, mann_whitney_u


def _brute_force_p(x: list[float], y: list[float], alternative: str) -> float:
    """Exact p by enumerating every split of the pooled sample into groups of len(x), len(y)."""
    pooled = x + y
    observed = sum(a > b for a in x for b in y)
    us = []
    for chosen in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in chosen]
        ys = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        us.append(sum(a > b for a in xs for b in ys))
    less = sum(u <= observed for u in us) / len(us)
    greater = sum(u >= observed for u in us) / len(us)
    return {"less": less, "greater": greater, "two-sided": min(1.0, 2 * min(less, greater))}[alternative]


def test_mann_whitney_exact_hand_computed() -> None:
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]) == (0.0, 0.05)  # 1 of C(6, 3) = 20 orderings
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], "greater") == (0.0, 1.0)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], "two-sided") == (0.0, 0.1)
    # U for m=3, n=4 counts 1,1,2,3,4,4,5,4,4,3,2,1,1 over u = 0..12 (35 orderings); U here is 8.
    x, y = [2, 5, 7], [1, 3, 4, 6]
    assert mann_whitney_u(x, y, "less") == (8.0, pytest.approx(28 / 35, abs=1e-15))
    assert mann_whitney_u(x, y, "greater") == (8.0, pytest.approx(11 / 35, abs=1e-15))
    assert mann_whitney_u(x, y, "two-sided") == (8.0, pytest.approx(22 / 35, abs=1e-15))


def test_mann_whitney_exact_matches_enumeration() -> None:
    rng = random.Random(7)
    for _ in range(12):
        pool = rng.sample(range(100), rng.randint(2, 9))
        cut = rng.randint(1, len(pool) - 1)
        x, y = pool[:cut], pool[cut:]
        for alternative in ("less", "greater", "two-sided"):
            _, p = mann_whitney_u(x, y, alternative)
            assert p == pytest.approx(_brute_force_p(x, y, alternative), abs=1e-12)


def test_mann_whitney_exact_at_400_pairs() -> None:
    u, p = mann_whitney_u(list(range(20)), list(range(20, 40)))
    assert u == 0.0 and p == pytest.approx(1 / math.comb(40, 20), rel=1e-12)


def test_mann_whitney_normal_approximation_with_ties() -> None:
    # Pooled ranks: 1, 2, (3, 3) -> 3.5 each, 4 -> 5, 5 -> 6, then 6..10 -> 7..11.
    # R_x = 1 + 2 + 3.5 + 5 + 6 = 17.5, U_x = R_x - m(m+1)/2 = 17.5 - 15 = 2.5; mean m*n/2 = 15.
    # One tie of size 2: sigma^2 = 30/12 * (12 - (8 - 2) / (11 * 10)).
    # "less" uses the upper tail of U_y = 30 - 2.5 = 27.5: z = (27.5 - 15 - 0.5) / sigma.
    x, y = [1, 2, 3, 4, 5], [3, 6, 7, 8, 9, 10]
    sigma = math.sqrt(30 / 12 * (12 - 6 / 110))
    expected = 1 - NormalDist().cdf(12 / sigma)
    u, p = mann_whitney_u(x, y, "less")
    assert u == 2.5
    assert p == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(0.01405, abs=5e-5)
    _, p_two = mann_whitney_u(x, y, "two-sided")
    assert p_two == pytest.approx(2 * expected, rel=1e-9)
    _, p_greater = mann_whitney_u(x, y, "greater")  # z = (2.5 - 15 - 0.5) / sigma
    assert p_greater == pytest.approx(1 - NormalDist().cdf(-13 / sigma), rel=1e-9)


def test_mann_whitney_normal_approximation_large_sample() -> None:
    # 21 * 21 = 441 > 400 pairs: normal approximation. U_x = 0, U_y = 441, mean 220.5,
    # sigma^2 = 441 * 43 / 12 (no ties), z = (441 - 220.5 - 0.5) / sigma.
    x, y = list(range(21)), list(range(21, 42))
    u, p = mann_whitney_u(x, y)
    z = 220 / math.sqrt(441 * 43 / 12)
    assert u == 0.0
    assert p == pytest.approx(1 - NormalDist().cdf(z), rel=1e-6)


def test_mann_whitney_all_tied_and_errors() -> None:
    assert mann_whitney_u([1.0, 1.0], [1.0, 1.0, 1.0]) == (3.0, 1.0)
    with pytest.raises(ValueError):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney_u([1.0], [2.0], "smaller")
    with pytest.raises(ValueError):
        mann_whitney_u([math.nan], [2.0])


def test_the_before_rule_needs_both_the_effect_and_the_test() -> None:
    old = [1.0 + 0.001 * i for i in range(10)]
    fails = before_rule()
    assert fails([s * 0.8 for s in old], [old], 1)  # 20% slower, every round below every old one
    assert not fails([s * 0.97 for s in old], [old], 1)  # significant, but under the 5% min_effect
    assert not fails(old, [old], 1)
