"""Regression gates: absolute floors, and drops relative to an earlier ``--benchmark-json``. Free of torch and pytest.

Two kinds of metric, two kinds of rule:
- work metrics (acceptance, agreement, tokens per verifier call, FLOP speedup, exact match) are deterministic for
  greedy decoding, so a tiny tolerance catches a real change on any machine;
- timing metrics (speedup) are noisy on shared machines, so the gate compares per-round speedups of the old and new
  run with a one-sided Mann-Whitney test and fails only when the drop is both significant and large.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specperf.analysis.stats import mann_whitney_u
from specperf.config import Floors, Thresholds, TimingGate, Tolerances
from specperf.output.benchfile import load_bench_json, require_shared_cases

FLOORS = {  # floor key -> extra_info metric it bounds from below
    "min_speedup": "speedup",
    "min_flop_speedup": "flop_speedup",
    "min_acceptance": "acceptance_aggregate",
    "min_agreement": "alpha",
    "min_exact_match": "exact_match_gated",  # exact_match_rate in float32; exact or near-tie in half precision
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

    def message(self) -> str:
        old = f"baseline run {self.old:.4g} -> " if self.old is not None else ""
        extra = f" ({self.detail})" if self.detail else ""
        return (f"{self.case}: {self.metric} regressed: {old}now {self.value:.4g}, allowed bound "
                f"{self.bound:.4g}{extra}")


TIMING_FLOORS = ("min_speedup",)  # floors on timed metrics: not applied to an untimed run (--benchmark-disable)


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


def check_timing(case_id: str, new_rounds: list[float], old_rounds: list[float],
                 gate: TimingGate) -> list[Violation]:
    """Per-round speedups: fail only on a drop that is significant (one-sided Mann-Whitney) and large."""
    if len(new_rounds) < 2 or len(old_rounds) < 2:
        return []
    old_median, new_median = statistics.median(old_rounds), statistics.median(new_rounds)
    bound = old_median * (1 - gate.min_effect)
    if new_median >= bound:
        return []
    _, p_value = mann_whitney_u(new_rounds, old_rounds, alternative="less")
    if p_value >= gate.alpha:
        return []
    return [Violation(case_id, "speedup", new_median, bound, old=old_median,
                      detail=f"median of {len(new_rounds)} paired rounds; Mann-Whitney p = {p_value:.3g} < "
                             f"alpha {gate.alpha}, drop > min_effect {gate.min_effect:.0%}")]


def evaluate(case_id: str, draft: str, new: Mapping[str, Any], old: Mapping[str, Any] | None,
             thresholds: Thresholds, *, timed: bool = True) -> list[Violation]:
    """Every gate that applies to one draft case. ``timed=False`` (an untimed --benchmark-disable run) skips the
    timing gates: the speedup floor and the comparison of per-round speedups. Sampling skips exactness."""
    found = check_floors(case_id, new, thresholds.floors_for(draft), timed=timed)
    if old is not None:
        found += check_relative(case_id, new, old, thresholds.tolerances)
    if old is not None and timed:
        found += check_timing(case_id, list(new.get("speedup_rounds") or []), list(old.get("speedup_rounds") or []),
                              thresholds.timing)
    return found


def load_baseline(path: str | Path, case_ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Case id -> extra_info of an earlier ``--benchmark-json`` file written by specperf.

    With ``case_ids`` (this run's draft cases), a file that holds none of them is a ConfigError naming a few ids on
    each side: it was written by another suite, and gating against it would silently check floors only.
    """
    run = load_bench_json(path, role="baseline file")
    if case_ids is not None:
        require_shared_cases(run, case_ids, role="baseline file", other="this run",
                             fix="pass the --benchmark-json of a run of the same suite with an overlapping "
                                 "selection (--specperf-drafts, --specperf-k, --specperf-slice), or drop "
                                 "--specperf-baseline")
    return run.cases
