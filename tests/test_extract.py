"""Metric extraction (specperf.analysis.extract) on hand-made records: pure functions of numbers, exact results."""

from __future__ import annotations

import pytest

from specperf.analysis import extract
from specperf.records import Audit, CaseRecord, DecodeResult, RunContext, StepCosts


def result(tokens: list[int], *, wall: float, calls: int, proposed: int | None = None, accepted: int | None = None,
           ttft: float = 0.01, positions: tuple[list[int], list[int]] | None = None,
           verifier_tokens: int | None = 20, draft_tokens: int | None = 10) -> DecodeResult:
    return DecodeResult(tokens=tokens, k=2, prompt_len=5, verifier_calls=calls, draft_calls=None,
                        verifier_tokens=verifier_tokens, draft_tokens=draft_tokens, proposed=proposed,
                        accepted=accepted, accept_counts=None,
                        position_proposed=positions[0] if positions else None,
                        position_accepted=positions[1] if positions else None, wall_s=wall, ttft_s=ttft)


def record(**overrides: object) -> CaseRecord:
    """Two requests of 4 tokens, two timed rounds, against a baseline twice as slow."""
    spec = [result([1, 2, 3, 4], wall=0.4, calls=2, proposed=4, accepted=2, positions=([2, 2], [2, 0])),
            result([5, 6, 7, 9], wall=0.2, calls=2, proposed=4, accepted=2, positions=([2, 2], [1, 1]))]
    base = [result([1, 2, 3, 4], wall=0.8, calls=4, draft_tokens=0), result([5, 6, 7, 8], wall=0.4, calls=4,
                                                                           draft_tokens=0)]
    fields: dict[str, object] = dict(
        case_id="d-k2-0:2", slice="0:2", k=2, batch_size=1, draft="d", draft_model="m", drafter="model",
        engine="specperf", context=RunContext("v", "cpu", "float32", 0.0), rounds=[spec, spec],
        baseline_rounds=[base, base],
        audits=[Audit([True, True, False], 4, 2, [0, 2, 0]), Audit([True, False, True], 4, 2, [0, 2, 0])],
        n_shortened=1, verifier_params=100, draft_params=10, first_divergence=[None, 3],
        divergence_margins=[None, 0.05], divergence_magnitudes=[None, 20.0], step_costs=StepCosts(0.010, 0.012, 0.002))
    fields.update(overrides)
    return CaseRecord(**fields)  # type: ignore[arg-type]


def test_timing_metrics():
    out = extract.timing_metrics(record().rounds)
    assert out["latency_p50"] == pytest.approx(0.075)  # 0.1 and 0.05 s/token, pooled over two rounds
    assert out["throughput_p50"] == pytest.approx(15.0)
    assert out["round_s"] == pytest.approx([0.6, 0.6])
    assert out["throughput_aggregate"] == pytest.approx(8 / 0.6)


def test_round_walls_take_each_batch_at_its_slowest_row():
    rows = record().rounds[0]
    assert extract.round_walls([rows], batch_size=2) == [0.4]
    assert extract.round_walls([rows], batch_size=1) == pytest.approx([0.6])


def test_acceptance_metrics_from_the_engine_counters():
    out = extract.acceptance_metrics(record())
    assert out["acceptance_aggregate"] == 0.5 and out["acceptance_p50"] == 0.5
    assert out["alpha"] == pytest.approx(4 / 6) and out["agreement_mean"] == pytest.approx(2 / 3)
    assert out["accept_counts"] == [0, 4, 0]
    assert out["position_acceptance"] == [0.75, 0.25]
    assert out["mean_accepted_length"] == 2.0
    assert out["audit_near_ties"] is None  # these audits were not checked against counters


def test_audit_near_ties_add_up_over_the_checked_requests():
    audits = [Audit([True], 4, 2, [0, 2, 0], near_ties=0), Audit([True], 4, 2, [0, 2, 0], near_ties=3)]
    assert extract.acceptance_metrics(record(audits=audits))["audit_near_ties"] == 3


def test_hidden_counters_come_from_the_audit_never_zero():
    hidden = [result([1, 2, 3, 4], wall=0.4, calls=2) for _ in range(2)]  # like transformers' assisted generation
    out = extract.acceptance_metrics(record(rounds=[hidden]))
    assert out["acceptance_aggregate"] == 0.5  # the audit's 4 of 8
    assert out["position_acceptance"] is None


def test_comparison_and_flops():
    out = extract.comparison_metrics(record())
    assert out["speedup"] == pytest.approx(2.0) and out["speedup_rounds"] == pytest.approx([2.0, 2.0])
    # verifier 2 x 100 x 20 tokens + draft 2 x 10 x 10 per request, against 2 x 100 x 20 per baseline request
    assert out["flop_speedup"] == pytest.approx(8000 / 8400)


def test_divergence_metrics_in_float32_and_half_precision():
    exact = extract.divergence_metrics(record())
    assert exact["exact_match_rate"] == 0.5 and exact["exact_match_gated"] == 0.5  # no tolerance in float32
    assert exact["divergence_margin_steps"] == [None, None] and exact["near_tie_tolerance"] == 0.0
    half = extract.divergence_metrics(record(context=RunContext("v", "cuda", "float16", 0.0)))
    # One float16 step at 20 is 2**-6: 0.05 is 3.2 steps, within 4: a near-tie.
    assert half["divergence_margin_steps"] == [None, pytest.approx(3.2)] and half["near_tie_tolerance"] == 4.0
    assert half["exact_or_near_tie_rate"] == 1.0 and half["exact_match_gated"] == 1.0
    # Either sign: the baseline's path gives the margin, and a negative one is as near as a positive one ...
    negative = extract.divergence_metrics(record(context=RunContext("v", "cuda", "float16", 0.0),
                                                 divergence_margins=[None, -0.05]))
    assert negative["exact_match_gated"] == 1.0
    # ... but a large one is a real disagreement (the old one-sided rule counted every negative margin as a tie).
    large = extract.divergence_metrics(record(context=RunContext("v", "cuda", "float16", 0.0),
                                              divergence_margins=[None, -3.0]))
    assert large["exact_match_gated"] == 0.5 and large["divergence_margin_steps"][1] == pytest.approx(192.0)
    # The same gap among small logits is many steps: relative, not absolute.
    small = extract.divergence_metrics(record(context=RunContext("v", "cuda", "float16", 0.0),
                                              divergence_magnitudes=[None, 0.5]))
    assert small["exact_match_gated"] == 0.5
    sampled = extract.divergence_metrics(record(context=RunContext("v", "cpu", "float32", 0.8)))
    assert sampled["exact_match_gated"] is None  # sampling: exactness is not gated


def test_theory_metrics_from_the_recorded_step_costs():
    out = extract.theory_metrics(record(), alpha=0.5, measured=1.5)
    assert out["cost_ratio"] == pytest.approx(0.2) and out["verify_cost"] == pytest.approx(1.2)
    assert out["expected_speedup"] == pytest.approx(1.75 / (2 * 0.2 + 1.2))
    assert out["efficiency"] == pytest.approx(1.5 / out["expected_speedup"])
    assert extract.theory_metrics(record(step_costs=None), 0.5, 1.5)["expected_speedup"] is None  # batch > 1


def test_case_and_baseline_metrics_carry_the_contract():
    from specperf.analysis.contract import BaseInfo, DraftInfo

    case = extract.case_metrics(record())
    assert set(case) | {"case_id"} == set(DraftInfo.__required_keys__)
    base = extract.baseline_metrics(record(draft=None, baseline_rounds=[]))
    assert set(base) | {"case_id"} == set(BaseInfo.__required_keys__)
    assert case["n_shortened"] == 1 and case["injected_faults"] is None


def test_the_time_breakdown_splits_the_instrumented_pass():
    from specperf.records import TimeSplit

    out = extract.breakdown_metrics(record(time_split=TimeSplit(wall_s=1.0, verifier_s=0.6, draft_s=0.3,
                                                                new_tokens=8)))
    assert out["time_verifier_per_token"] == pytest.approx(0.075)
    assert out["time_draft_per_token"] == pytest.approx(0.0375)
    assert out["time_other_per_token"] == pytest.approx(0.0125)
    assert (out["time_verifier_share"], out["time_draft_share"]) == pytest.approx((0.6, 0.3))
    assert out["time_other_share"] == pytest.approx(0.1)
    assert set(extract.breakdown_metrics(record()).values()) == {None}  # vLLM, --benchmark-disable


def test_acceptance_statistics_come_from_the_replay_when_there_is_one():
    replay = [Audit([True] * 3, 4, 3, [0, 0, 0, 1], calls=2), Audit([False] * 3, 4, 0, [2, 0, 0], calls=3),
              Audit([True, False, True], 4, 1, [1, 1, 0], calls=3)]
    out = extract.acceptance_metrics(record(replay_slice="0:3", replay_audits=replay))
    assert out["acceptance_samples"] == 3 and out["acceptance_sample_slice"] == "0:3"
    assert out["acceptance_per_request"] == [0.75, 0.0, 0.25]
    assert out["acceptance_p50"] == 0.25 and out["alpha"] == pytest.approx(5 / 9)
    assert out["replay_acceptance_aggregate"] == pytest.approx(4 / 12)
    # The timed requests' own figures are unchanged: the engine's counters and the audit's recomputation.
    assert out["acceptance_aggregate"] == 0.5 and out["audit_acceptance_aggregate"] == 0.5
    plain = extract.acceptance_metrics(record())
    assert (plain["acceptance_samples"], plain["acceptance_sample_slice"], plain["replay_acceptance_aggregate"]) == (
        2, "0:2", None)


def test_the_k_prediction_is_anchored_at_the_measured_k():
    from specperf.analysis.predict import prediction_metrics
    from specperf.records import TimeSplit

    costs = StepCosts(0.010, 0.012, 0.002, verify_curve_s=(0.011, 0.012, 0.0135, 0.0165))  # fit: 0.01055 + 0.0018 j
    calls = {1: (80, 50), 2: (80, 40), 3: (80, 32), 4: (80, 30)}  # 1.6, 2.0, 2.5, 2.67 tokens per call
    split = TimeSplit(wall_s=1.0, verifier_s=0.6, draft_s=0.3, new_tokens=8)  # other: 0.1 s over 4 calls
    out = prediction_metrics(record(step_costs=costs, calls_by_k=calls, time_split=split), 1.5)
    # step cost at k: fitted v(k+1), scaled to the case's own v(3) = 0.012, + k * 0.002 + 0.1 / 4
    fitted = {1: 0.01055, 2: 0.01235, 3: 0.01415, 4: 0.01595}
    cost = {k: fitted[k] * 0.012 / 0.01235 + k * 0.002 + 0.025 for k in fitted}
    per_call = {k: t / c for k, (t, c) in calls.items()}
    expected = {str(k): 1.5 * (per_call[k] / cost[k]) / (per_call[2] / cost[2]) for k in calls}
    assert out["predicted_speedup_by_k"] == pytest.approx(expected)
    assert out["predicted_speedup_by_k"]["2"] == pytest.approx(1.5)  # the measured point
    assert out["best_k"] == int(max(expected, key=lambda k: expected[k]))
    assert out["predicted_tokens_per_call_by_k"] == pytest.approx({str(k): v for k, v in per_call.items()})
    # The bound without prefills: 2 requests of 3 tokens after the first at v(1) = 0.010, against 1 verify call
    # (v(3) = 0.012) and k = 2 draft forwards (0.002) each.
    assert out["speedup_bound"] == pytest.approx(0.06 / 0.032)
    assert out["bound_efficiency"] == pytest.approx(1.5 / (0.06 / 0.032))
    assert prediction_metrics(record(step_costs=None), 1.5)["predicted_speedup_by_k"] is None


def test_the_bound_charges_each_prompts_prefill_to_both_sides():
    from specperf.analysis.predict import speedup_bound

    costs = StepCosts(0.010, 0.012, 0.002, verifier_prefill_s=(0.05, 0.03), draft_prefill_s=(0.01, 0.004))
    # Baseline: P_v + 3 v(1) per request. Speculative: P_v + P_d + 1 verify call + the one draft forward after the
    # draft's prefill (2 draft forwards, the first of them the prefill).
    baseline = (0.05 + 0.03) + 2 * 3 * 0.010
    spec = (0.05 + 0.01 + 0.012 + 0.002) + (0.03 + 0.004 + 0.012 + 0.002)
    assert speedup_bound(record(step_costs=costs)) == pytest.approx(baseline / spec)
    # A request that ended at its first token never ran the draft: no draft prefill is charged for it.
    ended = result([1], wall=0.1, calls=1, proposed=0, accepted=0)
    one = record(step_costs=StepCosts(0.010, 0.012, 0.002, verifier_prefill_s=(0.05,), draft_prefill_s=(0.01,)),
                 rounds=[[ended]])
    assert speedup_bound(one) == pytest.approx(1.0)
    # Prefills that do not match the round's requests are left out rather than misassigned.
    short = StepCosts(0.010, 0.012, 0.002, verifier_prefill_s=(0.05,), draft_prefill_s=(0.01,))
    assert speedup_bound(record(step_costs=short)) == pytest.approx(0.06 / 0.032)


def test_the_affine_fit_smooths_a_bump_and_keeps_a_line():
    from specperf.analysis.predict import affine_fit

    assert affine_fit([1.0, 2.0, 3.0, 4.0]) == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert affine_fit([1.0, 1.5, 1.0, 2.0]) == pytest.approx([1.0, 1.25, 1.5, 1.75])
    assert affine_fit([3.0]) == [3.0]
