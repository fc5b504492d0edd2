"""Which k: the speedup predicted for every block size k, and the bound the engine's own step costs allow.

Two figures per greedy batch-1 case, both pure functions of recorded numbers:

- ``speedup_bound``: what the measured work (verifier and draft calls per request) and the engine's forward costs
  measured alone allow if the loop cost nothing else: each request's baseline forwards over its speculative forwards,
  the prompt's prefill on both sides (and the draft's own prefill on the speculative side). Without prefills it is
  close to tokens per verifier call / (k c + v(k+1)) in verifier steps. ``bound_efficiency`` = measured speedup / bound.
  The costs are forwards measured alone, so the bound is itself a measurement, with the noise of the machine it ran
  on.
- ``predicted_speedup_by_k``: for k = 1..PREDICT_MAX_K, the tokens per call that specperf's loop would get at k
  (exact, from the greedy replay of the acceptance slice) over a step cost v(k+1) + k d + o, where v(k+1) is
  measured at each k and smoothed by an affine least-squares fit, d is one draft forward (for prompt lookup, its
  time per step, whatever k), and o the loop's own time per step from the time breakdown (taken as independent of
  k). The curve is anchored at the
  measured speedup of the case's own k, so it predicts the shape across k, not the machine's constant factors.
  ``best_k`` is its argmax.
"""

from __future__ import annotations

import math

from specperf.analysis.contract import PredictionMetrics
from specperf.records import CaseRecord


def speedup_bound(record: CaseRecord) -> float | None:
    """The speedup of the last round's requests if each forward cost what it costs alone: baseline seconds over
    speculative seconds, each a sum of its forwards' measured costs. None without step costs.

    Per request r with N new tokens: the baseline is its prefill P_v + (N - 1) v(1); speculative decoding is
    P_v + the draft's prefill P_d + (verifier calls - 1) v(k+1) + (draft calls - 1) c. With prefills unmeasured
    (or a request count that does not match) both prefills count as 0, which is the step-cost ratio (N - 1) v(1) /
    ((calls - 1) v(k+1) + draft calls c): close to tokens per call / (k c + v(k+1)) in verifier steps for long
    requests. A prompt's prefill is the same work on both sides, so it caps the speedup of every
    engine: this bound charges it, as the measured speedup does.
    """
    costs, last = record.step_costs, record.rounds[-1]
    if costs is None or costs.verifier_step_s <= 0 or not last:
        return None
    prefill_v = costs.verifier_prefill_s if len(costs.verifier_prefill_s) == len(last) else (0.0,) * len(last)
    prefill_d = costs.draft_prefill_s if len(costs.draft_prefill_s) == len(last) else (0.0,) * len(last)
    baseline = spec = 0.0
    for r, p_v, p_d in zip(last, prefill_v, prefill_d, strict=True):
        draft_forwards = r.draft_calls if r.draft_calls is not None else record.k * (r.verifier_calls - 1)
        p_d = p_d if draft_forwards else 0.0  # a request that ended at its first token never ran the draft
        baseline += p_v + (r.new_tokens - 1) * costs.verifier_step_s
        spec += (p_v + p_d + (r.verifier_calls - 1) * costs.verify_block_s
                 + max(0, draft_forwards - (1 if p_d else 0)) * costs.draft_step_s)
    return baseline / spec if spec > 0 else None


def affine_fit(values: list[float]) -> list[float]:
    """Least-squares a + b n through ``values`` at n = 0, 1, ...: a forward's cost is affine in its tokens at these
    sizes, and one size measured alone on a shared machine carries that measurement's noise (a bump there would move
    the best k)."""
    n = len(values)
    if n < 2:
        return list(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))
    return [mean_y + slope * (i - mean_x) for i in range(n)]


def _step_costs(record: CaseRecord) -> dict[int, float] | None:
    """Seconds of one speculative step at each k: v(k+1) + k d (or the lookup's time) + the loop's own o, with
    v(k+1) from the affine fit of the measured curve."""
    costs, split, last = record.step_costs, record.time_split, record.rounds[-1]
    steps = sum(r.verifier_calls for r in last)
    if costs is None or split is None or not costs.verify_curve_s or steps == 0:
        return None
    other = split.other_s / steps
    lookup = split.draft_s / steps if record.drafter != "model" else 0.0
    draft = costs.draft_step_s if record.drafter == "model" else 0.0
    verify = affine_fit(list(costs.verify_curve_s))
    # The curve is measured once per slice, apart from the case's own costs; scale it to the case's v(k+1), measured
    # interleaved with its draft forwards, so the draft and verify costs come from one measurement.
    if 1 <= record.k <= len(verify) and verify[record.k - 1] > 0:
        verify = [v * costs.verify_block_s / verify[record.k - 1] for v in verify]
    return {k: v + k * draft + lookup + other for k, v in enumerate(verify, start=1)}


def prediction_metrics(record: CaseRecord, measured: float | None) -> PredictionMetrics:
    """``speedup_bound``, ``bound_efficiency``, and the k prediction (keys are k as strings, as JSON keeps them)."""
    bound = speedup_bound(record)
    out: PredictionMetrics = {"speedup_bound": bound, "bound_efficiency": None,
                              "predicted_tokens_per_call_by_k": None, "predicted_speedup_by_k": None, "best_k": None}
    if bound and measured is not None and math.isfinite(measured):
        out["bound_efficiency"] = measured / bound
    if not record.calls_by_k:
        return out
    per_call = {k: tokens / calls for k, (tokens, calls) in sorted(record.calls_by_k.items()) if calls}
    out["predicted_tokens_per_call_by_k"] = {str(k): v for k, v in per_call.items()}
    cost = _step_costs(record)
    k0 = record.k
    if cost is None or k0 not in per_call or k0 not in cost or measured is None or not math.isfinite(measured):
        return out
    anchor = per_call[k0] / cost[k0]
    predicted = {k: measured * (per_call[k] / cost[k]) / anchor for k in per_call if k in cost}
    out["predicted_speedup_by_k"] = {str(k): v for k, v in predicted.items()}
    out["best_k"] = max(predicted, key=lambda k: predicted[k])
    return out
