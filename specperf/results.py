"""Turn a case's timed rounds and audit into the metrics that land in ``--benchmark-json`` extra_info.

The key names are specperf's output contract; README documents each.
"""

from __future__ import annotations

from typing import Any

from specperf import metrics
from specperf.audit import divergence_margin
from specperf.decoding import DecodeResult
from specperf.suite import CaseRun, SuiteRunner


def _pooled(rounds: list[list[DecodeResult]]) -> list[DecodeResult]:
    return [r for round_ in rounds for r in round_]


def round_walls(rounds: list[list[DecodeResult]], batch_size: int) -> list[float]:
    """Wall seconds of each round: the sum over its batches of the batch's wall (its slowest row's ``wall_s``)."""
    return [sum(max(r.wall_s for r in round_[i : i + batch_size]) for i in range(0, len(round_), batch_size))
            for round_ in rounds]


def timing_metrics(rounds: list[list[DecodeResult]], batch_size: int = 1) -> dict[str, Any]:
    """Per-request latency (s/token; within its batch), throughput (tok/s), TTFT and TPOT (s), pooled over the
    timed rounds; and the aggregate throughput of each round (all new tokens / the round's wall)."""
    results = _pooled(rounds)
    latency = metrics.summarize([r.latency for r in results])
    throughput = metrics.summarize([r.throughput for r in results])
    tpots = [r.tpot_s for r in results if r.tpot_s is not None]
    walls = round_walls(rounds, batch_size)
    aggregate = [sum(r.new_tokens for r in round_) / wall for round_, wall in zip(rounds, walls)]
    return {
        "latency_p50": latency.p50, "latency_p95": latency.p95,
        "throughput_p50": throughput.p50, "throughput_p95": throughput.p95, "throughput_p5": throughput.p5,
        "ttft_p50": metrics.percentile([r.ttft_s for r in results], 50),
        "tpot_p50": metrics.percentile(tpots, 50) if tpots else None,
        "throughput_aggregate": metrics.percentile(aggregate, 50),
        "round_s": walls,
    }


def _flops(n_params: int, tokens: int | None) -> float | None:
    # A forward costs about 2 FLOPs per parameter per processed token (attention's context term left out).
    return None if tokens is None else 2.0 * n_params * tokens


def base_metrics(runner: SuiteRunner, run: CaseRun) -> dict[str, Any]:
    """What every case reports, the baseline included."""
    config, last = runner.config, run.rounds[-1]
    new_tokens = sum(r.new_tokens for r in last)
    verifier_tokens = sum(r.verifier_tokens for r in last) if all(r.verifier_tokens is not None for r in last) else None
    return {
        "verifier": config.verifier, "slice": run.case.slice, "device": str(runner.device), "dtype": config.dtype,
        "k": run.case.k, "batch_size": run.case.batch_size, "n_requests": len(last), "new_tokens": new_tokens,
        "n_shortened": runner.prompts(run.case.slice).n_shortened,
        "verifier_calls_per_token": sum(r.verifier_calls for r in last) / new_tokens,
        "injected_faults": runner.faults.describe(),
        "flops_per_token": (_flops(runner.verifier.n_params, verifier_tokens) / new_tokens
                            if verifier_tokens is not None else None),
        **timing_metrics(run.rounds, run.case.batch_size),
    }


def _acceptance(run: CaseRun) -> tuple[list[float], int, int]:
    """Per-request draft acceptance, and the token totals: engine counters, or the audit where they are hidden."""
    last = run.rounds[-1]
    if all(r.proposed is not None for r in last):
        pairs = [(r.accepted, r.proposed) for r in last]
    else:
        pairs = [(a.accepted, a.proposed) for a in run.audits]
    rates = [a / p for a, p in pairs if p]
    return rates, sum(a for a, _ in pairs), sum(p for _, p in pairs)


def acceptance_metrics(run: CaseRun) -> dict[str, Any]:
    rates, accepted, proposed = _acceptance(run)
    summary = metrics.summarize(rates) if rates else None
    agreements = [a.agreement for a in run.audits if a.agreement is not None]
    agree = metrics.summarize(agreements) if agreements else None
    matched = sum(sum(a.matches) for a in run.audits)
    positions = sum(len(a.matches) for a in run.audits)
    last = run.rounds[-1]
    has_positions = all(r.position_proposed is not None for r in last)
    return {
        "acceptance_mean": summary.mean if summary else None,
        "acceptance_p50": summary.p50 if summary else None,
        "acceptance_p95": summary.p95 if summary else None,
        "acceptance_aggregate": accepted / proposed if proposed else None,
        "audit_acceptance_aggregate": (sum(a.accepted for a in run.audits) / sum(a.proposed for a in run.audits)
                                       if sum(a.proposed for a in run.audits) else None),
        "agreement_mean": agree.mean if agree else None,
        "agreement_p50": agree.p50 if agree else None,
        "agreement_p95": agree.p95 if agree else None,
        "alpha": matched / positions if positions else None,
        "mean_accepted_length": sum(r.new_tokens for r in last) / sum(r.verifier_calls for r in last),
        "accept_counts": metrics.merge_counts([a.accept_counts for a in run.audits]),
        "position_acceptance": metrics.rate(
            metrics.merge_counts([r.position_accepted for r in last]),
            metrics.merge_counts([r.position_proposed for r in last])) if has_positions else None,
    }


def comparison_metrics(runner: SuiteRunner, run: CaseRun) -> dict[str, Any]:
    """Speedup from the paired rounds, exactness against the baseline, FLOPs, and theory."""
    base_results, results = _pooled(run.baseline_rounds), _pooled(run.rounds)
    base_last, last = run.baseline_rounds[-1], run.rounds[-1]
    size = run.case.batch_size
    base_walls, walls = round_walls(run.baseline_rounds, size), round_walls(run.rounds, size)
    pairs = list(zip(base_last, last))
    divergence = [_first_divergence(b.tokens, r.tokens) for b, r in pairs]
    out: dict[str, Any] = {
        "speedup": metrics.speedup([r.latency for r in base_results], [r.latency for r in results]),
        "speedup_aggregate": metrics.aggregate_speedup(sum(base_walls), sum(walls)),
        "speedup_rounds": [b / c for b, c in zip(base_walls, walls)],
        "baseline_latency_p50": metrics.percentile([r.latency for r in base_results], 50),
        "exact_match_rate": sum(d is None for d in divergence) / len(divergence),
        "first_divergence": divergence,
    }
    out.update(_flop_metrics(runner, run, base_last, last))
    out.update(divergence_metrics(runner, run.case.slice, pairs, divergence))
    return out


# Largest verifier logit gap at a divergence that still counts as a near-tie, per dtype. Half precision keeps
# 8 (bfloat16) or 11 (float16) significant bits: at logits near 20 one step is 0.125 or 0.016, and a (k+1)-token
# verify forward and a 1-token forward round differently, by a few steps after a dozen layers. float32 has no
# tolerance: there, greedy output must equal the baseline token for token.
NEAR_TIE = {"float32": 0.0, "float16": 0.1, "bfloat16": 0.5}


def divergence_metrics(runner: SuiteRunner, slice_name: str, pairs: list[tuple[DecodeResult, DecodeResult]],
                       divergence: list[int | None]) -> dict[str, Any]:
    """At each request's first divergence from the baseline: the verifier's logit margin there; and the share
    of requests that match exactly or part only at a near-tie (the exact-match floor's metric in half precision)."""
    prompts, dtype = runner.prompts(slice_name).ids, runner.config.dtype
    tolerance = NEAR_TIE.get(dtype, 0.0)
    margins: list[float | None] = []
    near_tie = 0
    for prompt, (base, case), position in zip(prompts, pairs, divergence):
        margin = None if position is None else divergence_margin(runner.verifier.model, prompt, base.tokens,
                                                                 case.tokens, position)
        margins.append(margin)
        near_tie += margin is not None and margin <= tolerance
    exact = sum(d is None for d in divergence)
    return {
        "divergence_margins": margins,
        "near_tie_tolerance": tolerance,
        "exact_or_near_tie_rate": (exact + near_tie) / len(divergence),
        # Sampled output differs from the baseline's by design; its guarantee is a distribution (tests/test_sampling).
        "exact_match_gated": None if runner.config.generation.temperature > 0 else
        exact / len(divergence) if tolerance == 0.0 else (exact + near_tie) / len(divergence),
    }


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _flop_metrics(runner: SuiteRunner, run: CaseRun, base_last: list[DecodeResult],
                  last: list[DecodeResult]) -> dict[str, Any]:
    spec = run.case.draft
    if any(r.verifier_tokens is None for r in last):
        return {"flops_per_token": None, "flop_speedup": None}
    n_verifier = runner.verifier.n_params
    n_draft = runner.model(spec.model).n_params if spec.drafter == "model" else 0
    case_flops = sum(_flops(n_verifier, r.verifier_tokens) + _flops(n_draft, r.draft_tokens) for r in last)
    base_flops = sum(_flops(n_verifier, r.verifier_tokens) for r in base_last)
    return {"flops_per_token": case_flops / sum(r.new_tokens for r in last), "flop_speedup": base_flops / case_flops}


def theory_metrics(runner: SuiteRunner, run: CaseRun, alpha: float | None, measured: float) -> dict[str, Any]:
    """c (draft step / verifier step), v(k+1) (verify cost / step), Leviathan's expected speedup, efficiency."""
    case, config = run.case, runner.config
    if case.batch_size > 1:  # the model's step costs are measured at batch 1
        return {"cost_ratio": None, "verify_cost": None, "expected_speedup": None, "efficiency": None}
    v1 = runner.step_cost(config.verifier, 1, case.slice)
    verify_cost = runner.step_cost(config.verifier, case.k + 1, case.slice) / v1
    c = runner.step_cost(case.draft.model, 1, case.slice) / v1 if case.draft.drafter == "model" else 0.0
    expected = metrics.expected_speedup(alpha, case.k, c, verify_cost) if alpha is not None else None
    return {
        "cost_ratio": c, "verify_cost": verify_cost, "expected_speedup": expected,
        "efficiency": metrics.efficiency(measured, expected) if expected else None,
    }


def case_metrics(runner: SuiteRunner, run: CaseRun) -> dict[str, Any]:
    """Every extra_info key of a draft case."""
    spec = run.case.draft
    out = base_metrics(runner, run)
    out.update(draft=spec.name, draft_model=spec.model, drafter=spec.drafter, engine=spec.engine)
    out.update(acceptance_metrics(run))
    out.update(comparison_metrics(runner, run))
    out.update(theory_metrics(runner, run, out["alpha"], out["speedup"]))
    return out


def baseline_metrics(runner: SuiteRunner, run: CaseRun) -> dict[str, Any]:
    """Every extra_info key of a baseline case."""
    return {**base_metrics(runner, run), "draft": None, "engine": "specperf"}
