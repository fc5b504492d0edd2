"""Turn a case's record (timed rounds, audit, step costs) into the metrics that land in ``--benchmark-json``
extra_info. Pure functions of recorded numbers: no model runs here.

The key names are specperf's output contract (:mod:`specperf.analysis.contract`): each function returns the
contract's TypedDict of its stage, and :func:`case_metrics` and :func:`baseline_metrics` a case's whole extra_info
but ``case_id``, which the plugin writes first.
"""

from __future__ import annotations

from specperf import precision
from specperf.analysis import stats
from specperf.analysis.contract import (
    AcceptanceMetrics,
    BaselineMetrics,
    BaseMetrics,
    BreakdownMetrics,
    ComparisonMetrics,
    DivergenceMetrics,
    DraftMetrics,
    TheoryMetrics,
    TimingMetrics,
)
from specperf.analysis.predict import prediction_metrics
from specperf.records import Audit, CaseRecord, DecodeResult, pass_wall


def _pooled(rounds: list[list[DecodeResult]]) -> list[DecodeResult]:
    return [r for round_ in rounds for r in round_]


def round_walls(rounds: list[list[DecodeResult]], batch_size: int) -> list[float]:
    """Wall seconds of each round: the sum over its batches of the batch's wall (its slowest row's ``wall_s``)."""
    return [pass_wall(round_, batch_size) for round_ in rounds]


def timing_metrics(rounds: list[list[DecodeResult]], batch_size: int = 1) -> TimingMetrics:
    """Per-request latency (s/token; within its batch), throughput (tok/s), TTFT and TPOT (s), pooled over the
    timed rounds; and the aggregate throughput of each round (all new tokens / the round's wall)."""
    results = _pooled(rounds)
    latency = stats.summarize([r.latency for r in results])
    throughput = stats.summarize([r.throughput for r in results])
    tpots = [r.tpot_s for r in results if r.tpot_s is not None]
    walls = round_walls(rounds, batch_size)
    aggregate = [sum(r.new_tokens for r in round_) / wall for round_, wall in zip(rounds, walls)]
    return {
        "latency_p50": latency.p50, "latency_p95": latency.p95,
        "throughput_p50": throughput.p50, "throughput_p95": throughput.p95, "throughput_p5": throughput.p5,
        "ttft_p50": stats.percentile([r.ttft_s for r in results], 50),
        "tpot_p50": stats.percentile(tpots, 50) if tpots else None,
        "throughput_aggregate": stats.percentile(aggregate, 50),
        "round_s": walls,
    }


def flops(n_params: int, tokens: int | None) -> float | None:
    """About 2 FLOPs per parameter per processed token (attention's context term left out)."""
    return None if tokens is None else 2.0 * n_params * tokens


def breakdown_metrics(record: CaseRecord) -> BreakdownMetrics:
    """Where the wall time goes (the untimed instrumented pass): seconds per new token and shares of wall in
    verifier forwards, draft forwards or lookup, and the rest of the loop. None where it was not measured."""
    split = record.time_split
    if split is None or split.new_tokens == 0 or split.wall_s <= 0:
        return {"time_verifier_per_token": None, "time_verifier_share": None, "time_draft_per_token": None,
                "time_draft_share": None, "time_other_per_token": None, "time_other_share": None}
    tokens, wall = split.new_tokens, split.wall_s
    return {
        "time_verifier_per_token": split.verifier_s / tokens, "time_verifier_share": min(1.0, split.verifier_s / wall),
        "time_draft_per_token": split.draft_s / tokens, "time_draft_share": min(1.0, split.draft_s / wall),
        "time_other_per_token": split.other_s / tokens, "time_other_share": min(1.0, split.other_s / wall),
    }


def base_metrics(record: CaseRecord) -> BaseMetrics:
    """What every case reports, the baseline included."""
    ctx, last = record.context, record.rounds[-1]
    new_tokens = sum(r.new_tokens for r in last)
    verifier_tokens = sum(r.verifier_tokens or 0 for r in last) if all(
        r.verifier_tokens is not None for r in last) else None
    verifier_flops = flops(record.verifier_params, verifier_tokens)
    return {
        "verifier": ctx.verifier, "slice": record.slice, "device": ctx.device, "dtype": ctx.dtype,
        "k": record.k, "batch_size": record.batch_size, "n_requests": len(last), "new_tokens": new_tokens,
        "n_shortened": record.n_shortened,
        "verifier_calls_per_token": sum(r.verifier_calls for r in last) / new_tokens,
        "injected_faults": ctx.injected_faults,
        "flops_per_token": verifier_flops / new_tokens if verifier_flops is not None else None,
        **timing_metrics(record.rounds, record.batch_size),
        **breakdown_metrics(record),
    }


def _acceptance_pairs(record: CaseRecord) -> list[tuple[int, int]]:
    """(accepted, proposed) per request: the engine's counters, or the audit's where the engine hides them."""
    last = record.rounds[-1]
    if all(r.proposed is not None and r.accepted is not None for r in last):
        return [(r.accepted or 0, r.proposed or 0) for r in last]
    return [(a.accepted, a.proposed) for a in record.audits]


def _position_acceptance(last: list[DecodeResult]) -> list[float | None] | None:
    if not all(r.position_proposed is not None and r.position_accepted is not None for r in last):
        return None
    accepted = stats.merge_counts([r.position_accepted or [] for r in last])
    proposed = stats.merge_counts([r.position_proposed or [] for r in last])
    return stats.rate(accepted, proposed)


def _accept_counts(record: CaseRecord) -> list[int] | None:
    """The engine's per-step histogram where it reports one for every request (specperf, vLLM), else the audit's;
    None when neither exists (a vLLM method the audit cannot replay)."""
    last = record.rounds[-1]
    if all(r.accept_counts is not None for r in last):
        return stats.merge_counts([r.accept_counts or [] for r in last])
    return stats.merge_counts([a.accept_counts for a in record.audits]) if record.audits else None


def _sample_rates(record: CaseRecord) -> list[float]:
    """Per-request acceptance over the statistics' sample: the greedy replay of the acceptance slice when there is
    one, else the timed requests' own counters (the engine's, or the audit's where the engine hides them)."""
    if record.replay_audits:
        return [a.accepted / a.proposed for a in record.replay_audits if a.proposed]
    return [a / p for a, p in _acceptance_pairs(record) if p]


def acceptance_metrics(record: CaseRecord) -> AcceptanceMetrics:
    """Draft acceptance (vLLM's accepted / proposed), agreement (alpha) and tokens per verifier call.

    The per-request statistics (mean, p50, p95, agreement, alpha) are over the greedy replay of the acceptance
    slice when there is one (``acceptance_samples`` requests); the aggregates are the timed requests' own: the
    engine's counters, and the audit's recomputation of them."""
    pairs, audits, last = _acceptance_pairs(record), record.audits, record.rounds[-1]
    sample = record.replay_audits or audits
    rates = _sample_rates(record)
    accepted, proposed = sum(a for a, _ in pairs), sum(p for _, p in pairs)
    summary = stats.summarize(rates) if rates else None
    agreements = [a.agreement for a in sample if a.agreement is not None]
    agree = stats.summarize(agreements) if agreements else None
    matched, positions = sum(sum(a.matches) for a in sample), sum(len(a.matches) for a in sample)
    audit_proposed = sum(a.proposed for a in audits)
    replay_proposed = sum(a.proposed for a in record.replay_audits)
    return {
        "acceptance_mean": summary.mean if summary else None,
        "acceptance_p50": summary.p50 if summary else None,
        "acceptance_p95": summary.p95 if summary else None,
        "acceptance_samples": len(rates),
        "acceptance_per_request": rates,
        "acceptance_sample_slice": (record.replay_slice or record.slice) if record.replay_audits else record.slice,
        "agreement_samples": len(agreements),
        "acceptance_aggregate": accepted / proposed if proposed else None,
        "audit_acceptance_aggregate": sum(a.accepted for a in audits) / audit_proposed if audit_proposed else None,
        "replay_acceptance_aggregate": (sum(a.accepted for a in record.replay_audits) / replay_proposed
                                        if replay_proposed else None),
        "audit_near_ties": _near_ties(audits),
        "agreement_mean": agree.mean if agree else None,
        "agreement_p50": agree.p50 if agree else None,
        "agreement_p95": agree.p95 if agree else None,
        "alpha": matched / positions if positions else None,
        "mean_accepted_length": sum(r.new_tokens for r in last) / sum(r.verifier_calls for r in last),
        "accept_counts": _accept_counts(record),
        "position_acceptance": _position_acceptance(last),
    }


def _near_ties(audits: list[Audit]) -> int | None:
    """Draft decisions the engine took the other way from the replay at a near-tie, over the audited requests;
    None when no counter was checked (sampling, vLLM n-gram, transformers)."""
    checked = [a.near_ties for a in audits if a.near_ties is not None]
    return sum(checked) if checked else None


def divergence_steps(record: CaseRecord) -> list[float | None]:
    """Per request: |verifier logit margin| at its first divergence, in steps of the dtype at the logits' magnitude
    (:mod:`specperf.precision`); None where the output matched, ended there, or the dtype has no tolerance."""
    dtype, magnitudes = record.context.dtype, record.divergence_magnitudes
    steps: list[float | None] = []
    for i, margin in enumerate(record.divergence_margins):
        magnitude = magnitudes[i] if i < len(magnitudes) else None
        steps.append(None if margin is None or magnitude is None else
                     precision.margin_steps(margin, magnitude, dtype))
    return steps


def divergence_metrics(record: CaseRecord) -> DivergenceMetrics:
    """Exactness against the paired baseline: exact share, near-ties in half precision, and the gated figure.

    A divergence is a near-tie when the verifier's margin there, either sign, lies within the dtype's tolerance
    (float32 has none). Sampled output differs from the baseline's by design (its guarantee is a distribution,
    tests/test_sampling), so with temperature > 0 ``exact_match_gated`` is None: the exact-match floor does not
    apply.
    """
    divergence, steps = record.first_divergence, divergence_steps(record)
    tolerance = precision.tolerance_steps(record.context.dtype)
    exact = sum(d is None for d in divergence)
    near_tie = sum(s is not None and s <= tolerance for s in steps)
    n = len(divergence)
    return {
        "exact_match_rate": exact / n,
        "first_divergence": divergence,
        "divergence_margins": record.divergence_margins,
        "divergence_margin_steps": steps,
        "near_tie_tolerance": tolerance,
        "exact_or_near_tie_rate": (exact + near_tie) / n,
        "exact_match_gated": None if record.context.temperature > 0 else (exact + near_tie) / n,
    }


def comparison_metrics(record: CaseRecord) -> ComparisonMetrics:
    """Speedup from the paired rounds and FLOPs against the baseline."""
    base_results, results = _pooled(record.baseline_rounds), _pooled(record.rounds)
    size = record.batch_size
    base_walls, walls = round_walls(record.baseline_rounds, size), round_walls(record.rounds, size)
    flops_per_token, flop_speedup = _flop_metrics(record)
    return {
        "speedup": stats.speedup([r.latency for r in base_results], [r.latency for r in results]),
        "speedup_aggregate": stats.aggregate_speedup(sum(base_walls), sum(walls)),
        "speedup_rounds": [b / c for b, c in zip(base_walls, walls)],
        "baseline_latency_p50": stats.percentile([r.latency for r in base_results], 50),
        "flops_per_token": flops_per_token,
        "flop_speedup": flop_speedup,
    }


def _flop_metrics(record: CaseRecord) -> tuple[float | None, float | None]:
    """(FLOPs per new token, verifier and draft; the baseline's FLOPs over the case's), None where unknown."""
    last, base_last = record.rounds[-1], record.baseline_rounds[-1]
    if any(r.verifier_tokens is None for r in last) or not record.verifier_params:  # unknown work or model size
        return None, None
    case_flops = sum((flops(record.verifier_params, r.verifier_tokens) or 0.0)
                     + (flops(record.draft_params, r.draft_tokens) or 0.0) for r in last)
    base_flops = sum(flops(record.verifier_params, r.verifier_tokens) or 0.0 for r in base_last)
    return case_flops / sum(r.new_tokens for r in last), base_flops / case_flops


def theory_metrics(record: CaseRecord, alpha: float | None, measured: float) -> TheoryMetrics:
    """c (draft step / verifier step), v(k+1) (verify cost / step), Leviathan's expected speedup, efficiency."""
    costs = record.step_costs
    if costs is None:  # batch size > 1: the step costs are measured at batch 1
        return {"cost_ratio": None, "verify_cost": None, "expected_speedup": None, "efficiency": None}
    c = costs.draft_step_s / costs.verifier_step_s
    verify_cost = costs.verify_block_s / costs.verifier_step_s
    expected = stats.expected_speedup(alpha, record.k, c, verify_cost) if alpha is not None else None
    return {
        "cost_ratio": c, "verify_cost": verify_cost, "expected_speedup": expected,
        "efficiency": stats.efficiency(measured, expected) if expected else None,
    }


def case_metrics(record: CaseRecord) -> DraftMetrics:
    """Every extra_info key of a draft case but ``case_id``."""
    acceptance, comparison = acceptance_metrics(record), comparison_metrics(record)
    assert record.drafter is not None  # a draft case's record names its drafter
    return {
        **base_metrics(record),
        "draft": record.draft, "draft_model": record.draft_model, "drafter": record.drafter, "engine": record.engine,
        **acceptance,
        **comparison,
        **divergence_metrics(record),
        **theory_metrics(record, acceptance["alpha"], comparison["speedup"]),
        **prediction_metrics(record, comparison["speedup"]),
    }


def baseline_metrics(record: CaseRecord) -> BaselineMetrics:
    """Every extra_info key of a baseline case but ``case_id``."""
    return {**base_metrics(record), "draft": None, "engine": "specperf"}
