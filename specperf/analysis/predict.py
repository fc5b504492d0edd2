"""Which k: the speedup predicted for every block size k, and the bound the engine's own step costs allow.

Two figures per greedy batch-1 case, both pure functions of recorded numbers:

- ``speedup_bound``: what the measured work (verifier and draft calls per request) and the engine's forward costs
  measured alone allow if the loop cost nothing else: each request's baseline forwards over its speculative forwards,
  the prompt's prefill on both sides (and the draft's own prefill on the speculative side). Each verify call is priced
  at the width it verified (below), read from the engine's own counters (:func:`drafted_counts`). Without prefills,
  and with every block full, it is close to tokens per verifier call / (k c + v(k+1)) in verifier steps.
  ``bound_efficiency`` = measured speedup / bound. The costs are forwards measured alone, so the bound is itself a
  measurement, with the noise of the machine it ran on.
- ``predicted_speedup_by_k``: for k = 1..PREDICT_MAX_K, the tokens per call that specperf's loop would get at k
  (exact, from the greedy replay of the acceptance slice) over the mean cost of the replay's steps at k: each step's
  verifier forward priced at its width (the replay records how many tokens each step drafted,
  ``CaseRecord.drafted_by_k``), plus d per drafted token (d: one draft forward; for prompt lookup d = 0 and its lookup
  time per step counts instead, whatever k), plus o, the loop's own time per step from the time breakdown (taken as
  independent of k). A record without the replay's step widths prices every step at a full block, v(k+1) + k d + o.
  The curve is anchored at the measured speedup of the case's own k, so it predicts the shape across k, not the
  machine's constant factors. ``best_k`` is its argmax.

The price of one verifier forward over w tokens (:func:`verify_costs`): for w = 1 the case's own v(1); for w >= 2
the affine least-squares fit of the verify-cost curve (measured at w = 2..PREDICT_MAX_K + 1) at w, scaled so that
w = k + 1 costs the case's own v(k+1), and never less than the smaller of v(1) and v(k+1). The case's v(1) and v(k+1)
are measured interleaved with its draft forwards; the curve, measured once per slice apart from them, gives only the
shape between and beyond them. Without a curve: the line through v(1) and v(k+1). A step that drafted j tokens
verifies j + 1 (the pending token and its drafts): a prompt-lookup step that found no match, and any loop's step at
the last token, runs a plain one-token verifier forward, priced v(1) like a baseline step.
"""

from __future__ import annotations

import math

from specperf.analysis.contract import PredictionMetrics
from specperf.records import CaseRecord, DecodeResult, StepCosts


def drafted_counts(result: DecodeResult) -> list[int] | None:
    """[j]: the request's verify steps (the prefill excluded) that drafted exactly j tokens, j = 0..k, from the
    engine's counters: ``position_proposed[j - 1] - position_proposed[j]`` steps drafted j (``position_proposed[k]``
    = 0), and the rest of the ``verifier_calls - 1`` steps drafted none. None when the counters are unknown
    (transformers' assisted generation) or do not add up to ``verifier_calls`` and ``proposed``."""
    positions = result.position_proposed
    if positions is None or result.proposed is None:
        return None
    at_least = [*positions, 0]  # [i]: steps that drafted more than i tokens
    counts = [result.verifier_calls - 1 - at_least[0]]
    counts += [at_least[j - 1] - at_least[j] for j in range(1, len(at_least))]
    if min(counts) < 0 or sum(j * n for j, n in enumerate(counts)) != result.proposed:
        return None
    return counts


def _line(values: list[float]) -> tuple[float, float]:
    """(a, b) of the least-squares line a + b n through ``values`` at n = 0, 1, ... (at least two)."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    slope = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))
    return mean_y - slope * mean_x, slope


def verify_costs(costs: StepCosts, k: int, max_width: int) -> list[float]:
    """[w - 1]: seconds of one verifier forward over w tokens, w = 1..``max_width``, at a case of block size ``k``
    (the rule in the module docstring)."""
    v1, block = costs.verifier_step_s, costs.verify_block_s
    curve = list(costs.verify_curve_s)
    a, b = _line(curve) if len(curve) >= 2 else (0.0, 0.0)  # the curve's fit at width w: a + b (w - 2)
    anchor = a + b * (k - 1)  # the fit at w = k + 1

    def price(w: int) -> float:
        if anchor > 0:
            return block * (a + b * (w - 2)) / anchor
        return v1 + (block - v1) * (w - 1) / k

    floor = min(v1, block)  # so that w = k + 1 is the case's v(k+1) as measured, whichever of the two is larger
    return [v1] + [max(floor, price(w)) for w in range(2, max_width + 1)]


def _verify_seconds(drafted: list[int] | None, prices: list[float], calls: int, k: int) -> float:
    """Seconds of a request's verify steps after the prefill: each at its width where ``drafted`` says it, else all
    ``calls - 1`` at a full block."""
    if drafted is None or len(drafted) > len(prices):
        return (calls - 1) * prices[k]
    return sum(n * prices[j] for j, n in enumerate(drafted))


def speedup_bound(record: CaseRecord) -> float | None:
    """The speedup of the last round's requests if each forward cost what it costs alone: baseline seconds over
    speculative seconds, each a sum of its forwards' measured costs. None without step costs.

    Per request r with N new tokens: the baseline is its prefill P_v + (N - 1) v(1); speculative decoding is
    P_v + the draft's prefill P_d + the sum over its verify steps after the prefill of v(w), w the tokens the step
    verified (:func:`verify_costs`; all at v(k+1) where the engine's counters do not say), + (draft calls - 1) c.
    With prefills unmeasured (or a request count that does not match) both prefills count as 0, which is the
    step-cost ratio: with full blocks (N - 1) v(1) / ((calls - 1) v(k+1) + draft calls c), close to tokens per call /
    (k c + v(k+1)) in verifier steps for long requests. A prompt's prefill is the same work on both sides, so it caps
    the speedup of every engine: this bound charges it, as the measured speedup does.
    """
    costs, last = record.step_costs, record.rounds[-1]
    if costs is None or costs.verifier_step_s <= 0 or not last:
        return None
    prices = verify_costs(costs, record.k, record.k + 1)
    prefill_v = costs.verifier_prefill_s if len(costs.verifier_prefill_s) == len(last) else (0.0,) * len(last)
    prefill_d = costs.draft_prefill_s if len(costs.draft_prefill_s) == len(last) else (0.0,) * len(last)
    baseline = spec = 0.0
    for r, p_v, p_d in zip(last, prefill_v, prefill_d, strict=True):
        draft_forwards = r.draft_calls if r.draft_calls is not None else record.k * (r.verifier_calls - 1)
        p_d = p_d if draft_forwards else 0.0  # a request that ended at its first token never ran the draft
        baseline += p_v + (r.new_tokens - 1) * costs.verifier_step_s
        spec += (p_v + p_d + _verify_seconds(drafted_counts(r), prices, r.verifier_calls, record.k)
                 + max(0, draft_forwards - (1 if p_d else 0)) * costs.draft_step_s)
    return baseline / spec if spec > 0 else None


def affine_fit(values: list[float]) -> list[float]:
    """Least-squares a + b n through ``values`` at n = 0, 1, ...: a forward's cost is affine in its tokens at these
    sizes, and one size measured alone on a shared machine carries that measurement's noise (a bump there would move
    the best k)."""
    if len(values) < 2:
        return list(values)
    a, b = _line(values)
    return [a + b * i for i in range(len(values))]


def _step_costs(record: CaseRecord) -> dict[int, float] | None:
    """Mean seconds of one speculative step at each k: its verifier forward at its width (:func:`verify_costs`),
    d per drafted token (or the lookup's time), and the loop's own o; every step at a full block, v(k+1) + k d + o,
    where the replay did not record its steps' widths."""
    costs, split, last = record.step_costs, record.time_split, record.rounds[-1]
    steps = sum(r.verifier_calls for r in last)
    if costs is None or split is None or not costs.verify_curve_s or steps == 0:
        return None
    other = split.other_s / steps
    lookup = split.draft_s / steps if record.drafter != "model" else 0.0
    draft = costs.draft_step_s if record.drafter == "model" else 0.0
    n_k = len(costs.verify_curve_s)
    # The curve is measured once per slice, apart from the case's own costs; verify_costs scales it to the case's
    # v(k+1), measured interleaved with its draft forwards, so the draft and verify costs come from one measurement.
    prices = verify_costs(costs, record.k, n_k + 1)
    out = {}
    for k in range(1, n_k + 1):
        drafted = record.drafted_by_k.get(k, [])
        if len(drafted) == k + 1 and sum(drafted) > 0:
            n = sum(drafted)
            step = sum(c * (prices[j] + j * draft) for j, c in enumerate(drafted)) / n
        else:
            step = prices[k] + k * draft
        out[k] = step + lookup + other
    return out


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
