"""In-session A/B comparison: paired rounds of two sides, one decision per case and metric. Pure statistics.

Design. For each case the coordinator runs A's (the reference's) and B's rounds in ABBA blocks (:func:`abba_order`),
so round i of A and round i of B ran next to each other: pair i. Drift of the machine moves both rounds of a pair
alike and cancels in the pair's log ratio d_i = log(B_i / A_i). ABBA also balances which side runs first: a position
effect, or a linear drift across a block, enters one pair as +e and the next as -e, which keeps the d_i symmetric
about the true shift (and makes neighbouring pairs negatively correlated, so the interval errs on the wide side).

Statistic. The shift is the Hodges-Lehmann estimate of the d_i, the median of their Walsh averages, with the exact
distribution-free interval of the Wilcoxon signed-rank test (:mod:`specperf.analysis.signed_rank`): it assumes only
independent pairs symmetric about the shift, is robust to a stray slow round, and is exact at the 10-30 pairs a case
runs, where a bootstrap interval under-covers.

Decision, as Chromium Pinpoint's DIFFERENT / SAME / UNKNOWN, but on the interval against effect sizes in percent
(Pinpoint thresholds a p-value of unpaired samples, so any detectable change is DIFFERENT however small): DIFFERENT
when the whole interval lies beyond log(1 + min_effect) one way (slower or faster; only slower fails), SAME when it
lies within +-log(1 + same_margin) (equivalence by interval inclusion, i.e. two one-sided tests), else UNKNOWN: run
another block of pairs, up to a cap.

False alarms over the session: a wrong DIFFERENT or SAME needs an interval that misses its true shift. Each case-metric
test looks at most ``looks`` times, at pair counts fixed before the session (:class:`AbPlan`), and each interval is
built at confidence 1 - alpha / (tests x looks). By the union bound (Bonferroni), the chance that any interval of the
session misses is at most alpha, whatever the dependence between a case's metrics or between its nested looks and
whatever the data-driven choice to stop; intervals are equal-tailed, so a false failure has at most alpha / 2.
Unchanged code makes the sides exchangeable, so each d_i is then symmetric about 0 and this needs no assumption
about the shape of the noise. Tighter schemes (group-sequential boundaries, Holm) need the looks' joint distribution
or all cases at once; Bonferroni needs no model and only lengthens the intervals by about z(alpha / 2mL) / z(alpha / 2)
(1.75 at 10 cases x 2 metrics x 4 looks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from specperf.analysis.signed_rank import FloatArray, Floats, fewest_pairs, finite_array, shift_interval, signed_rank_p

Decision = Literal["DIFFERENT", "SAME", "UNKNOWN"]
Direction = Literal["slower", "faster"]
DIFFERENT: Decision = "DIFFERENT"
SAME: Decision = "SAME"
UNKNOWN: Decision = "UNKNOWN"
# Deterministic per-request work compared exactly between the sides (fields of specperf.records.DecodeResult).
WORK_FIELDS = ("tokens", "verifier_calls", "proposed", "accepted", "accept_counts")


@dataclass(frozen=True)
class Metric:
    """A per-round figure that both sides measure, and which way is better."""

    name: str
    higher_is_better: bool


WALL = Metric("wall", higher_is_better=False)  # a speculative round's wall, seconds
SPEEDUP = Metric("speedup", higher_is_better=True)  # a side's verifier-only round wall / its speculative round wall


def abba_order(n_pairs: int) -> tuple[tuple[str, int], ...]:
    """The order of a case's rounds as (side, pair index): A0 B0 B1 A1 A2 B2 B3 A3 ... (``n_pairs`` >= 0)."""
    order: list[tuple[str, int]] = []
    for i in range(n_pairs):
        sides = ("A", "B") if i % 2 == 0 else ("B", "A")
        order.extend((side, i) for side in sides)
    return tuple(order)


# --------------------------------------------------------------------------- paired rounds


def log_ratios(a: Floats, b: Floats) -> FloatArray:
    """d_i = log(b_i / a_i) of paired positive figures (same length, pair order)."""
    xa, xb = finite_array(a, "side A's rounds"), finite_array(b, "side B's rounds")
    if xa.size != xb.size:
        raise ValueError(f"paired rounds need as many A as B rounds, got {xa.size} and {xb.size}")
    if np.any(xa <= 0) or np.any(xb <= 0):
        raise ValueError("paired rounds must be positive to take their log ratio")
    return np.log(xb / xa)


# --------------------------------------------------------------------------- the decision


def decide(low: float, high: float, *, min_effect: float, same_margin: float,
           higher_is_better: bool) -> tuple[Decision, Direction | None]:
    """DIFFERENT (with its direction) when the log-ratio interval [low, high] lies wholly beyond
    +-log(1 + min_effect); else SAME when it lies within +-log(1 + same_margin); else UNKNOWN. DIFFERENT is checked
    first, so a same_margin above min_effect cannot hide a change."""
    if min_effect < 0 or same_margin < 0:
        raise ValueError(f"min_effect and same_margin must be >= 0, got {min_effect!r} and {same_margin!r}")
    edge, band = math.log1p(min_effect), math.log1p(same_margin)
    up, down = low > edge, high < -edge
    if up or down:
        return DIFFERENT, "faster" if up == higher_is_better else "slower"
    if -band <= low and high <= band:
        return SAME, None
    return UNKNOWN, None


@dataclass(frozen=True)
class AbResult:
    """One case-metric comparison of B against A. Ratios are B / A (exp of the log-scale figures)."""

    case_id: str
    metric: str
    n_rounds: int  # pairs of adjacent A and B rounds
    a_median: float
    b_median: float
    ratio: float  # exp(Hodges-Lehmann shift)
    low: float  # interval on the ratio scale; 0.0 .. inf when the pairs are too few to decide
    high: float
    decision: Decision
    direction: Direction | None  # for DIFFERENT only
    confidence: float  # the interval's confidence (the session's Bonferroni level)
    min_effect: float
    p_value: float  # two-sided signed-rank test of ratio 1 (:func:`signed_rank_p`)

    @property
    def failed(self) -> bool:
        """Only a DIFFERENT slowdown fails a case."""
        return self.decision == DIFFERENT and self.direction == "slower"


def compare_metric(case_id: str, metric: Metric, a: Floats, b: Floats, *, confidence: float,
                   min_effect: float, same_margin: float | None = None) -> AbResult:
    """Compare B's rounds with A's, pair by pair (``a[i]`` and ``b[i]`` ran adjacent). ``same_margin`` None means
    min_effect."""
    d = log_ratios(a, b)
    shift = shift_interval(d, confidence)
    margin = min_effect if same_margin is None else same_margin
    decision, direction = decide(shift.low, shift.high, min_effect=min_effect, same_margin=margin,
                                 higher_is_better=metric.higher_is_better)
    return AbResult(case_id, metric.name, shift.n, float(np.median(a)), float(np.median(b)), math.exp(shift.estimate),
                    math.exp(shift.low), math.exp(shift.high), decision, direction, confidence, min_effect,
                    signed_rank_p(d))


@dataclass(frozen=True)
class PairedRounds:
    """One case's rounds of both sides, in pair order: index i of A and of B ran adjacent (:func:`abba_order`)."""

    case_id: str
    a_wall_s: tuple[float, ...]
    b_wall_s: tuple[float, ...]
    a_speedup: tuple[float, ...]  # A's verifier-only round wall / A's speculative round wall, per pair
    b_speedup: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = {len(self.a_wall_s), len(self.b_wall_s), len(self.a_speedup), len(self.b_speedup)}
        if len(sizes) != 1:
            raise ValueError(f"{self.case_id}: every series needs one figure per pair, got lengths {sorted(sizes)}")

    @property
    def n_pairs(self) -> int:
        return len(self.a_wall_s)

    def series(self, metric: Metric) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A's and B's figures of ``metric`` (WALL or SPEEDUP)."""
        if metric == WALL:
            return self.a_wall_s, self.b_wall_s
        if metric == SPEEDUP:
            return self.a_speedup, self.b_speedup
        raise ValueError(f"paired rounds hold wall and speedup, not {metric.name!r}")


# --------------------------------------------------------------------------- the session's design and its looks


def session_confidence(alpha: float, n_tests: int, looks: int = 1) -> float:
    """1 - alpha / (n_tests x looks): each interval's confidence, so that all of them hold together with
    probability >= 1 - alpha (Bonferroni)."""
    if not 0.0 < alpha < 1.0 or n_tests < 1 or looks < 1:
        raise ValueError(f"need 0 < alpha < 1, n_tests >= 1 and looks >= 1, got {alpha!r}, {n_tests}, {looks}")
    return 1.0 - alpha / (n_tests * looks)


@dataclass(frozen=True)
class AbPlan:
    """A session's design, fixed before its first round: the looks at each case and the margins.

    A case is looked at after ``first_pairs`` pairs, then after every further ``block_pairs``, up to ``max_pairs``;
    fixing these counts in advance is what lets the Bonferroni split cover every data-driven choice to stop.
    """

    n_tests: int  # case-metric tests in the session: cases x 2 (wall and speedup)
    alpha: float = 0.05  # chance that any interval of the session misses; a false failure has at most alpha / 2
    first_pairs: int = 12  # pairs at the first look (6 ABBA blocks)
    block_pairs: int = 6  # pairs added before each later look
    max_pairs: int = 24  # the cap: pairs at the last look, after which UNKNOWN stays UNKNOWN
    min_effect: float = 0.02  # DIFFERENT needs the whole interval beyond this change (0.02: 2%)
    same_margin: float | None = None  # SAME needs the whole interval within this; None: min_effect

    def __post_init__(self) -> None:
        if self.first_pairs < 1 or self.block_pairs < 1 or self.max_pairs < self.first_pairs:
            raise ValueError(f"need 1 <= first_pairs <= max_pairs and block_pairs >= 1, got {self.first_pairs}, "
                             f"{self.max_pairs} and {self.block_pairs}")
        if self.min_effect < 0 or self.margin < 0:
            raise ValueError(f"min_effect and same_margin must be >= 0, got {self.min_effect} and {self.margin}")
        needed = fewest_pairs(self.confidence)
        if self.first_pairs < needed:
            raise ValueError(f"{self.first_pairs} pairs cannot decide at the session's confidence "
                             f"{self.confidence:.6f} ({self.n_tests} tests x {self.looks} looks): the first look "
                             f"needs at least {needed} pairs")

    @property
    def look_sizes(self) -> tuple[int, ...]:
        """The pair counts at which a case is looked at: first_pairs, + block_pairs, ..., max_pairs."""
        sizes = list(range(self.first_pairs, self.max_pairs, self.block_pairs))
        return (*sizes, self.max_pairs)

    @property
    def looks(self) -> int:
        return len(self.look_sizes)

    @property
    def confidence(self) -> float:
        return session_confidence(self.alpha, self.n_tests, self.looks)

    @property
    def margin(self) -> float:
        return self.min_effect if self.same_margin is None else self.same_margin


@dataclass(frozen=True)
class Step:
    """What one look at a case found, and how many more pairs it needs (0: settled or at the cap)."""

    case_id: str
    look: int  # 1-based
    results: tuple[AbResult, ...]  # wall, then speedup
    more_pairs: int

    @property
    def done(self) -> bool:
        return self.more_pairs == 0

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.results)


def next_step(rounds: PairedRounds, plan: AbPlan) -> Step:
    """Look at a case after ``rounds.n_pairs`` pairs, which must be one of ``plan.look_sizes``.

    The case is settled, and ``more_pairs`` is 0, when a metric is a DIFFERENT slowdown (the case fails whatever the
    other shows), when every metric is DIFFERENT or SAME, or at the cap; otherwise ``more_pairs`` is the distance to
    the next look. Each interval is at ``plan.confidence``.
    """
    sizes = plan.look_sizes
    if rounds.n_pairs not in sizes:
        raise ValueError(f"{rounds.case_id}: {rounds.n_pairs} pairs is not a planned look {list(sizes)}")
    look = sizes.index(rounds.n_pairs)
    results = tuple(compare_metric(rounds.case_id, metric, *rounds.series(metric), confidence=plan.confidence,
                                   min_effect=plan.min_effect, same_margin=plan.margin) for metric in (WALL, SPEEDUP))
    settled = any(r.failed for r in results) or all(r.decision != UNKNOWN for r in results)
    more = 0 if settled or look == len(sizes) - 1 else sizes[look + 1] - rounds.n_pairs
    return Step(rounds.case_id, look + 1, results, more)


def failure_message(result: AbResult) -> str:
    """One line: the case, the metric, B/A with its interval and confidence, the decision and the pairs used."""
    verdict = result.decision if result.direction is None else f"{result.decision} {result.direction}"
    return (f"{result.case_id}: {result.metric} B/A {result.ratio:.4f} "
            f"[{result.low:.4f}, {result.high:.4f}] at {100 * result.confidence:.4g}% confidence, {verdict} "
            f"(min effect {100 * result.min_effect:.3g}%), {result.n_rounds} paired rounds "
            f"(A median {result.a_median:.4g}, B median {result.b_median:.4g})")


# --------------------------------------------------------------------------- deterministic work, compared exactly


@dataclass(frozen=True)
class WorkDifference:
    """One deterministic figure that differs between the sides."""

    case_id: str
    request: int | None  # index in slice order; None when the sides ran different numbers of requests
    field: str
    a: object
    b: object

    def message(self) -> str:
        """One line naming the case, the request and the field; token lists by their first differing position."""
        where = f"{self.case_id}: " + ("" if self.request is None else f"request {self.request} ")
        if isinstance(self.a, (list, tuple)) and isinstance(self.b, (list, tuple)):
            pos = next((i for i, (x, y) in enumerate(zip(self.a, self.b)) if x != y), min(len(self.a), len(self.b)))
            return (f"{where}{self.field} differ from position {pos} (A {self.a[pos:pos + 1]}, "
                    f"B {self.b[pos:pos + 1]}; lengths {len(self.a)} and {len(self.b)})")
        return f"{where}{self.field} A {self.a!r}, B {self.b!r}"


def _work_value(record: object, name: str, side: str, index: int) -> object:
    """A record's field: a mapping's key or an object's attribute (a DecodeResult)."""
    try:
        return record[name] if isinstance(record, Mapping) else getattr(record, name)
    except (KeyError, AttributeError):
        raise ValueError(f"side {side}'s request {index} has no field {name!r}") from None


def compare_work(case_id: str, a_records: Sequence[object], b_records: Sequence[object],
                 fields: Sequence[str] = WORK_FIELDS) -> list[WorkDifference]:
    """The named differences of ``fields`` between each side's per-request records (mappings or DecodeResults, in
    slice order, from one greedy round); empty when identical. Values compare with ``==``: None (a counter the
    backend hides) equals only None. Meaningful for greedy decoding only, where both sides must do the same work."""
    diffs: list[WorkDifference] = []
    if len(a_records) != len(b_records):
        diffs.append(WorkDifference(case_id, None, "requests", len(a_records), len(b_records)))
    for index, (ra, rb) in enumerate(zip(a_records, b_records)):
        for name in fields:
            va, vb = _work_value(ra, name, "A", index), _work_value(rb, name, "B", index)
            if va != vb:
                diffs.append(WorkDifference(case_id, index, name, va, vb))
    return diffs
