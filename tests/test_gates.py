"""Gates: floors, relative tolerances, the noise-aware timing rule, and the baseline-file checks."""

from __future__ import annotations

import json

import pytest

from specperf.analysis import gates
from specperf.config import Floors, Thresholds, TimingGate, Tolerances
from specperf.errors import ConfigError

OLD = {"acceptance_aggregate": 0.70, "alpha": 0.85, "mean_accepted_length": 3.0, "verifier_calls_per_token": 0.3333,
       "flop_speedup": 0.60, "exact_match_rate": 1.0, "speedup": 1.8, "speedup_rounds": [1.80, 1.82, 1.78, 1.81, 1.79]}


def test_floors_name_the_metric_and_bound():
    found = gates.check_floors("d-k4-0:8", {"speedup": 1.1, "alpha": None}, Floors(min_speedup=1.2,
                                                                                    min_agreement=0.9))
    assert [v.metric for v in found] == ["speedup"]  # an unmeasured metric (None) is not gated
    assert found[0].message() == "d-k4-0:8: speedup regressed: now 1.1, allowed bound 1.2 (min_speedup = 1.2)"


def test_unchanged_metrics_pass_the_relative_gates():
    assert gates.evaluate("c", "d", dict(OLD), OLD, Thresholds()) == []


@pytest.mark.parametrize(("metric", "value"), [
    ("acceptance_aggregate", 0.697), ("alpha", 0.847), ("mean_accepted_length", 2.96),
    ("verifier_calls_per_token", 0.3370), ("flop_speedup", 0.59), ("exact_match_rate", 0.875),
])
def test_each_work_metric_is_gated(metric, value):
    new = {**OLD, metric: value}
    found = gates.check_relative("c", new, OLD, Tolerances())
    assert [v.metric for v in found] == [metric]
    assert f"baseline run {OLD[metric]:.4g} -> now {value:.4g}" in found[0].message()


def test_changes_inside_the_tolerance_pass():
    new = {**OLD, "acceptance_aggregate": 0.6985, "mean_accepted_length": 2.98, "verifier_calls_per_token": 0.335}
    assert gates.check_relative("c", new, OLD, Tolerances()) == []


def test_timing_gate_needs_a_large_and_significant_drop():
    gate = TimingGate(alpha=0.01, min_effect=0.15)
    slow = [1.40, 1.41, 1.39, 1.42, 1.40]  # -22%, every round below every old round: p = 1/252
    assert [v.metric for v in gates.check_timing("c", slow, OLD["speedup_rounds"], gate)] == ["speedup"]
    small = [1.62, 1.63, 1.61, 1.60, 1.64]  # -10%: significant but below min_effect
    assert gates.check_timing("c", small, OLD["speedup_rounds"], gate) == []
    noisy = [1.2, 2.4, 1.3, 2.2, 1.4]  # median -22%, but the rounds overlap: not significant
    assert gates.check_timing("c", noisy, OLD["speedup_rounds"], gate) == []


def _bench_file(tmp_path, benchmarks):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_baseline_file_is_read_by_case_id(tmp_path):
    path = _bench_file(tmp_path, [{"extra_info": {"case_id": "a-k4-0:8", "alpha": 0.9}}, {"extra_info": {}}])
    assert gates.load_baseline(path) == {"a-k4-0:8": {"case_id": "a-k4-0:8", "alpha": 0.9}}


def test_bad_baseline_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        gates.load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        gates.load_baseline(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ConfigError, match="no 'benchmarks' list"):
        gates.load_baseline(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="no specperf cases"):
        gates.load_baseline(_bench_file(tmp_path, [{"extra_info": {"x": 1}}]))


def test_exact_match_floor_reads_the_dtype_aware_metric():
    floors = Floors(min_exact_match=1.0)
    half = {"exact_match_rate": 0.75, "exact_match_gated": 1.0}  # one request parted at a near-tie
    assert gates.check_floors("c", half, floors) == []
    strict = {"exact_match_rate": 0.75, "exact_match_gated": 0.75}  # float32: no tolerance
    assert [v.metric for v in gates.check_floors("c", strict, floors)] == ["exact_match_gated"]
    old_file = {"exact_match_rate": 0.75}  # written before near-tie handling
    assert [v.metric for v in gates.check_floors("c", old_file, floors)] == ["exact_match_rate"]
