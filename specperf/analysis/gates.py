"""Regression gates: absolute floors, and drops relative to an earlier ``--benchmark-json``. Free of torch and pytest.

Two kinds of metric, two kinds of rule:
- work metrics (acceptance, agreement, tokens per verifier call, FLOP speedup, exact match) are deterministic for
  greedy decoding, so a tiny tolerance catches a real change on any machine;
- timing metrics (speedup) drift between whole runs on shared machines, so the gate treats the run as the unit: the
  new run's median per-round speedup against the distribution of the baseline runs' medians (a prediction bound,
  :mod:`specperf.analysis.runlevel`), failing only when the drop is beyond that bound and larger than min_effect.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from specperf.analysis.runlevel import lower_prediction_bound
from specperf.config import Floors, Thresholds, TimingGate, Tolerances

FLOORS = {  # floor key -> extra_info metric it bounds from below
    "min_speedup": "speedup",
    "min_flop_speedup": "flop_speedup",
    "min_acceptance": "acceptance_aggregate",
    "min_agreement": "alpha",
    "min_exact_match": "exact_match_gated",  # exact_match_rate in float32; exact or near-tie in half precision
    "min_tpot_speedup": "tpot_speedup",  # serving mode: server cases only (other cases lack the key)
    "min_throughput_speedup": "throughput_speedup",
    "min_slo_attainment": "slo_attainment",
}
# (metric, tolerance field, rule): "abs" = may drop by at most t, "rel" = by at most t * old, "rise" = may rise
# by at most t * old (lower is better).
RELATIVE = (
    ("acceptance_aggregate", "acceptance", "abs"),
    ("alpha", "agreement", "abs"),
    ("mean_accepted_length", "mean_accepted_length", "rel"),
    ("verifier_calls_per_token", "verifier_calls_per_token", "rise"),
    ("flop_speedup", "flop_speedup", "rel"),
    ("exact_match_rate", "exact_match_rate", "abs"),
)


class RegressionDetected(AssertionError):
    """A gate failed; the message names the case, the metric, the old and new values and the allowed bound."""


@dataclass(frozen=True)
class Violation:
    case: str
    metric: str
    value: float
    bound: float
    old: float | None = None
    detail: str = ""
    old_label: str = "baseline run"  # what ``old`` is: the newest baseline run, or the baseline runs' centre

    def message(self) -> str:
        old = f"{self.old_label} {self.old:.4g} -> " if self.old is not None else ""
        extra = f" ({self.detail})" if self.detail else ""
        return (f"{self.case}: {self.metric} regressed: {old}now {self.value:.4g}, allowed bound "
                f"{self.bound:.4g}{extra}")


SAMPLING_NOTE = "exact-match floor not applied: the suite samples (temperature > 0), so outputs differ by design"
# Floors on timed metrics: not applied to an untimed run (--benchmark-disable).
TIMING_FLOORS = ("min_speedup", "min_tpot_speedup", "min_throughput_speedup", "min_slo_attainment")


def sampled(values: Mapping[str, Any]) -> bool:
    """The case sampled (temperature > 0): ``exact_match_gated`` is recorded as None, so exactness is not gated."""
    return "exact_match_gated" in values and values["exact_match_gated"] is None


def check_floors(case_id: str, values: Mapping[str, Any], floors: Floors, *, timed: bool = True) -> list[Violation]:
    """Absolute floors from the thresholds; a metric the case cannot measure (None) is not gated."""
    found = []
    for key, metric in FLOORS.items():
        if key in TIMING_FLOORS and not timed:
            continue
        bound, value = getattr(floors, key), values.get(metric)
        if metric == "exact_match_gated" and "exact_match_gated" not in values:  # written before near-tie handling
            metric, value = "exact_match_rate", values.get("exact_match_rate")
        if bound is not None and value is not None and value < bound:
            found.append(Violation(case_id, metric, value, bound, detail=f"{key} = {bound}"))
    return found


def _bound(old: float, tolerance: float, rule: str) -> float:
    if rule == "abs":
        return old - tolerance
    if rule == "rel":
        return old * (1 - tolerance)
    return old * (1 + tolerance)


def check_relative(case_id: str, new: Mapping[str, Any], old: Mapping[str, Any],
                   tolerances: Tolerances) -> list[Violation]:
    """Deterministic work metrics against the baseline run, each within its tolerance."""
    found = []
    for metric, field_name, rule in RELATIVE:
        before, now = old.get(metric), new.get(metric)
        if before is None or now is None or (metric == "exact_match_rate" and (sampled(new) or sampled(old))):
            continue
        bound = _bound(before, getattr(tolerances, field_name), rule)
        worse = now > bound if rule == "rise" else now < bound
        if worse:
            found.append(Violation(case_id, metric, now, bound, old=before,
                                   detail=f"tolerance {getattr(tolerances, field_name)} ({rule})"))
    return found


def check_timing(case_id: str, new_rounds: Sequence[float], baseline_runs: Sequence[Sequence[float]],
                 gate: TimingGate, n_cases: int = 1) -> list[Violation]:
    """The run-level timing gate: the new run's median per-round speedup against the baseline runs' medians.

    Fails only when the median is below the one-sided prediction bound of a run of unchanged code (at false-alarm
    rate ``gate.alpha / n_cases``: the run's alpha shared among its gated cases) and more than ``min_effect`` below
    the baseline runs' centre. Runs with fewer than 2 rounds are not gated.
    """
    runs = [list(r) for r in baseline_runs if len(r) >= 2]
    if len(new_rounds) < 2 or not runs:
        return []
    new_median = statistics.median(new_rounds)
    bound = lower_prediction_bound([statistics.median(r) for r in runs], gate.alpha / max(1, n_cases),
                                   prior_sd=gate.run_sd, min_runs=gate.min_runs)
    floor = bound.center * (1 - gate.min_effect)
    if new_median >= bound.bound or new_median >= floor:
        return []
    evidence = (f"median of {len(new_rounds)} paired rounds; {bound.n_runs} baseline run(s), centre "
                f"{bound.center:.4g}, spread {bound.spread:.1%} between runs ({bound.source}); below the "
                f"{1 - gate.alpha / max(1, n_cases):.2%} prediction bound {bound.bound:.4g} of a run of unchanged "
                f"code (alpha {gate.alpha} over {max(1, n_cases)} case(s)) and more than min_effect "
                f"{gate.min_effect:.0%} below the centre ({floor:.4g})")
    return [Violation(case_id, "speedup", new_median, min(bound.bound, floor), old=bound.center, detail=evidence,
                      old_label="baseline runs' centre" if bound.n_runs > 1 else "baseline run")]


def evaluate(case_id: str, draft: str, new: Mapping[str, Any], old: Sequence[Mapping[str, Any]] | None,
             thresholds: Thresholds, *, timed: bool = True, n_cases: int = 1) -> list[Violation]:
    """Every gate that applies to one draft case.

    ``old`` holds the case in each baseline run, oldest first: the newest is the reference for the deterministic
    work metrics, and all of them form the distribution of run medians the timing gate compares with. ``n_cases``
    is the number of cases the run gates on timing (they share the run's false-alarm rate). ``timed=False`` (an
    untimed --benchmark-disable run) skips the timing gates: the speedup floor and the run comparison. Sampling
    skips exactness.
    """
    found = check_floors(case_id, new, thresholds.floors_for(draft), timed=timed)
    if old:
        found += check_relative(case_id, new, old[-1], thresholds.tolerances)
    if old and timed:
        found += check_timing(case_id, list(new.get("speedup_rounds") or []),
                              [list(o.get("speedup_rounds") or []) for o in old], thresholds.timing, n_cases)
    return found
