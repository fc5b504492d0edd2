"""Gates: floors, relative tolerances, the run-level timing rule, and the baseline-file checks."""

from __future__ import annotations

import json

import pytest

from specperf.analysis import gates
from specperf.config import Floors, Thresholds, TimingGate, Tolerances
from specperf.errors import ConfigError
from specperf.output.benchfile import load_baseline

OLD = {"acceptance_aggregate": 0.70, "alpha": 0.85, "mean_accepted_length": 3.0, "verifier_calls_per_token": 0.3333,
       "flop_speedup": 0.60, "exact_match_rate": 1.0, "speedup": 1.8, "speedup_rounds": [1.80, 1.82, 1.78, 1.81, 1.79]}


def test_floors_name_the_metric_and_bound():
    found = gates.check_floors("d-k4-0:8", {"speedup": 1.1, "alpha": None}, Floors(min_speedup=1.2,
                                                                                    min_agreement=0.9))
    assert [v.metric for v in found] == ["speedup"]  # an unmeasured metric (None) is not gated
    assert found[0].message() == "d-k4-0:8: speedup regressed: now 1.1, allowed bound 1.2 (min_speedup = 1.2)"


def test_unchanged_metrics_pass_the_relative_gates():
    assert gates.evaluate("c", "d", dict(OLD), [OLD], Thresholds()) == []


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


def _runs(*medians: float) -> list[list[float]]:
    """Baseline runs with the given median per-round speedups (three rounds each, +-1% around the median)."""
    return [[m * 0.99, m, m * 1.01] for m in medians]


# Ten runs of unchanged code: medians with a between-run SD of about 3% of the log, like the default suite's here.
TEN = _runs(1.50, 1.46, 1.55, 1.52, 1.44, 1.49, 1.53, 1.47, 1.51, 1.56)


def test_timing_gate_compares_runs_not_rounds():
    """A run whose rounds agree tightly with each other, but whose median is within the drift of whole runs,
    passes: the old round-level Mann-Whitney test called such a drift significant."""
    gate = TimingGate(alpha=0.05, min_effect=0.05)
    drifted = [1.435, 1.436, 1.437, 1.434, 1.435]  # 4.5% below the centre, just below the slowest baseline run
    assert gates.check_timing("c", drifted, TEN, gate) == []
    slow = [s / 1.25 for s in (1.49, 1.50, 1.51)]  # the same code 25% slower
    (found,) = gates.check_timing("c", slow, TEN, gate)
    assert found.metric == "speedup" and found.old == pytest.approx(1.50, rel=0.01)
    assert "10 baseline run(s)" in found.message() and "(baseline runs)" in found.message()


def test_timing_gate_needs_the_drop_beyond_min_effect_too():
    tight = _runs(*[1.50] * 9, 1.501)  # runs that never drift: the prediction bound is just below 1.50
    gate = TimingGate(alpha=0.05, min_effect=0.10)
    assert gates.check_timing("c", [1.42, 1.42, 1.42], tight, gate) == []  # -5%: below the bound, within min_effect
    assert gates.check_timing("c", [1.30, 1.30, 1.30], tight, gate)  # -13%: both


def test_the_run_alpha_is_shared_among_the_cases():
    """Bonferroni over the cases of a run: with more cases each one needs a larger drop to fail."""
    gate = TimingGate(alpha=0.05, min_effect=0.0)
    new = [1.38, 1.38, 1.38]  # 8% below the centre
    assert gates.check_timing("c", new, TEN, gate, n_cases=1)
    assert gates.check_timing("c", new, TEN, gate, n_cases=20) == []


def test_one_baseline_run_uses_the_prior_spread():
    (old,) = _runs(1.50)
    gate = TimingGate(alpha=0.05, min_effect=0.0, run_sd=0.05, min_runs=3)
    # z(0.95) * 0.05 * sqrt(2) = 11.6% of log: 1.335 is the bound.
    assert gates.check_timing("c", [1.34, 1.34, 1.34], [old], gate) == []
    (found,) = gates.check_timing("c", [1.33, 1.33, 1.33], [old], gate)
    assert "(prior run_sd)" in found.message() and found.bound == pytest.approx(1.3354, abs=1e-3)


def test_too_few_rounds_are_not_timing_gated():
    assert gates.check_timing("c", [1.0], TEN, TimingGate()) == []
    assert gates.check_timing("c", [1.0, 1.0], [[1.5]], TimingGate()) == []


def _bench_file(tmp_path, benchmarks):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_baseline_file_is_read_by_case_id(tmp_path):
    path = _bench_file(tmp_path, [{"extra_info": {"case_id": "a-k4-0:8", "alpha": 0.9}}, {"extra_info": {}}])
    assert load_baseline(path) == {"a-k4-0:8": [{"case_id": "a-k4-0:8", "alpha": 0.9}]}


def test_several_baseline_runs_and_folders_are_read_oldest_first(tmp_path):
    def run(name: str, when: str, alpha: float) -> None:
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / name).write_text(json.dumps({"datetime": when, "benchmarks": [
            {"extra_info": {"case_id": "a-k4-0:8", "alpha": alpha}}]}))

    run("b.json", "2026-11-02T00:00:00", 0.8)
    run("a.json", "2026-11-03T00:00:00", 0.9)
    run("c.json", "2026-11-01T00:00:00", 0.7)
    history = load_baseline([tmp_path / "runs"])
    assert [info["alpha"] for info in history["a-k4-0:8"]] == [0.7, 0.8, 0.9]  # by datetime, not by name
    assert [i["alpha"] for i in load_baseline([tmp_path / "runs" / "a.json"])["a-k4-0:8"]] == [0.9]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no .json file"):
        load_baseline([tmp_path / "empty"])


def test_deterministic_gates_use_the_newest_baseline_run():
    older = {**OLD, "acceptance_aggregate": 0.80}  # an older main, before an intended change
    assert gates.evaluate("c", "d", dict(OLD), [older, OLD], Thresholds()) == []
    assert gates.evaluate("c", "d", dict(OLD), [OLD, older], Thresholds())


def test_bad_baseline_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_baseline(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_baseline(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ConfigError, match="no 'benchmarks' list"):
        load_baseline(tmp_path / "other.json")
    with pytest.raises(ConfigError, match="no specperf cases"):
        load_baseline(_bench_file(tmp_path, [{"extra_info": {"x": 1}}]))


def test_exact_match_floor_reads_the_dtype_aware_metric():
    floors = Floors(min_exact_match=1.0)
    half = {"exact_match_rate": 0.75, "exact_match_gated": 1.0}  # one request parted at a near-tie
    assert gates.check_floors("c", half, floors) == []
    strict = {"exact_match_rate": 0.75, "exact_match_gated": 0.75}  # float32: no tolerance
    assert [v.metric for v in gates.check_floors("c", strict, floors)] == ["exact_match_gated"]
    old_file = {"exact_match_rate": 0.75}  # written before near-tie handling
    assert [v.metric for v in gates.check_floors("c", old_file, floors)] == ["exact_match_rate"]
