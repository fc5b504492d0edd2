"""Each verifier call priced at the width it verified: the widths the engine ran, read back from its counters and
from the replay, and the bound and k prediction computed from them on hand-made records, exact."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from specperf import ModelDrafter, PromptLookupDrafter, decode
from specperf.analysis.predict import drafted_counts, prediction_metrics, speedup_bound, verify_costs
from specperf.bench.audit import audit_drafter, draft_matches
from specperf.bench.block_walk import block_drafted
from specperf.engine.cache import RollbackCache
from specperf.engine.forward import ModelForward
from specperf.records import CaseRecord, DecodeResult, RunContext, StepCosts, TimeSplit
from tests.tiny_models import PROMPTS, tiny_gpt2

N_NEW = 40


def result(n_new: int, *, calls: int, positions: list[int], draft_calls: int = 0) -> DecodeResult:
    """A request of ``n_new`` tokens whose ``calls - 1`` verify steps drafted as ``positions`` says."""
    k = len(positions)
    return DecodeResult(tokens=list(range(n_new)), k=k, prompt_len=5, verifier_calls=calls, draft_calls=draft_calls,
                        verifier_tokens=None, draft_tokens=None, proposed=sum(positions), accepted=0,
                        accept_counts=None, position_proposed=positions, position_accepted=[0] * k, wall_s=1.0,
                        ttft_s=0.1)


def record(requests: list[DecodeResult], costs: StepCosts, *, drafter: str = "prompt-lookup",
           **overrides: object) -> CaseRecord:
    fields: dict[str, object] = dict(
        case_id="c", slice="0:1", k=requests[0].k, batch_size=1, draft="d", draft_model=None, drafter=drafter,
        engine="specperf", context=RunContext("v", "cpu", "float32", 0.0), rounds=[requests], step_costs=costs)
    fields.update(overrides)
    return CaseRecord(**fields)  # type: ignore[arg-type]


# v(1) = 10 ms; the curve (widths 2..5) is the line 12 + 2 (w - 2) ms, and the case's v(4) (k = 3) is 16 ms, on it.
LINE = StepCosts(0.010, 0.016, 0.0, verify_curve_s=(0.012, 0.014, 0.016, 0.018))


def test_the_engines_counters_give_the_steps_per_width():
    # k = 3: 5 steps drafted >= 1 token, 3 drafted >= 2, 1 drafted 3; 9 steps after the prefill, so 4 drafted none.
    assert drafted_counts(result(14, calls=10, positions=[5, 3, 1])) == [4, 2, 2, 1]
    # Counters that do not add up (more drafting steps than verify steps, or a wrong total) say nothing.
    assert drafted_counts(result(14, calls=4, positions=[5, 3, 1])) is None
    bad = result(14, calls=10, positions=[5, 3, 1])
    bad.proposed = 8
    assert drafted_counts(bad) is None
    bad.position_proposed = None
    assert drafted_counts(bad) is None


def test_a_width_is_priced_on_the_curve_scaled_to_the_cases_own_block():
    assert verify_costs(LINE, 3, 4) == pytest.approx([0.010, 0.012, 0.014, 0.016])
    # The case's v(4) measured twice the curve's: the curve gives the shape, the case's costs the scale.
    double = StepCosts(0.010, 0.032, 0.0, verify_curve_s=LINE.verify_curve_s)
    assert verify_costs(double, 3, 5) == pytest.approx([0.010, 0.024, 0.028, 0.032, 0.036])
    # A noisy curve is smoothed by its affine fit: (12, 15, 15, 18) fits 12.3 + 1.8 (w - 2), anchored at v(3) = 14.
    bumpy = StepCosts(0.010, 0.014, 0.0, verify_curve_s=(0.012, 0.015, 0.015, 0.018))
    assert verify_costs(bumpy, 2, 3) == pytest.approx([0.010, 0.0123 * 0.014 / 0.0141, 0.014])
    # Never below v(1); without a curve, the line through v(1) and v(k+1).
    steep = StepCosts(0.005, 0.006, 0.0, verify_curve_s=(0.004, 0.006, 0.008, 0.010))
    assert verify_costs(steep, 2, 3) == pytest.approx([0.005, 0.005, 0.006])
    assert verify_costs(StepCosts(0.010, 0.016, 0.0), 3, 4) == pytest.approx([0.010, 0.012, 0.014, 0.016])
    # A v(k+1) measured below v(1) (a flat curve, noise) is kept as measured: the floor is the smaller of the two.
    flat = StepCosts(0.010, 0.009, 0.0, verify_curve_s=(0.009, 0.009, 0.009, 0.009))
    assert verify_costs(flat, 3, 4) == pytest.approx([0.010, 0.009, 0.009, 0.009])


def test_prompt_lookups_narrow_steps_raise_the_bound():
    """4 steps verified 1 token, 2 verified 2, 2 verified 3, 1 a full block of 4: priced at those widths, not at
    v(4) each."""
    lookup = record([result(14, calls=10, positions=[5, 3, 1])], LINE)
    baseline = 13 * 0.010
    by_width = 4 * 0.010 + 2 * 0.012 + 2 * 0.014 + 1 * 0.016
    assert speedup_bound(lookup) == pytest.approx(baseline / by_width)
    assert speedup_bound(lookup) > baseline / (9 * 0.016)  # every call at v(k+1), as before
    # Counters that do not add up keep every call at v(k+1).
    unknown = result(14, calls=10, positions=[5, 3, 1])
    unknown.position_proposed = None
    assert speedup_bound(record([unknown], LINE)) == pytest.approx(baseline / (9 * 0.016))


def test_a_draft_that_always_fills_its_block_keeps_the_full_block_bound():
    """Every step drafted k = 3 tokens: each verify call is v(4), as before, with prefills and draft forwards."""
    costs = StepCosts(0.010, 0.016, 0.002, verify_curve_s=LINE.verify_curve_s, verifier_prefill_s=(0.05, 0.03),
                      draft_prefill_s=(0.01, 0.004))
    full = [result(21, calls=6, positions=[5, 5, 5], draft_calls=15),
            result(13, calls=4, positions=[3, 3, 3], draft_calls=9)]
    baseline = 0.05 + 20 * 0.010 + 0.03 + 12 * 0.010
    spec = (0.05 + 0.01 + 5 * 0.016 + 14 * 0.002) + (0.03 + 0.004 + 3 * 0.016 + 8 * 0.002)
    assert speedup_bound(record(full, costs, drafter="model")) == pytest.approx(baseline / spec)


def test_the_k_prediction_prices_the_replays_steps_at_their_widths():
    # k = 2 case: v(1) 10 ms, v(3) 14 ms, curve 12 + 2 (w - 2) ms at widths 2..4 (k = 1..3); lookup 1 ms, o 0.5 ms
    # per step (10 verifier calls in the timed round).
    costs = StepCosts(0.010, 0.014, 0.0, verify_curve_s=(0.012, 0.014, 0.016))
    split = TimeSplit(wall_s=1.0, verifier_s=0.985, draft_s=0.010, new_tokens=14)
    calls = {1: (60, 40), 2: (60, 32), 3: (60, 30)}
    drafted = {1: [20, 10], 2: [12, 8, 2], 3: [10, 5, 4, 1]}  # steps (calls - 10 prefills) that drafted 0, 1, ...
    timed = record([result(14, calls=10, positions=[5, 3])], costs, calls_by_k=calls, time_split=split,
                   drafted_by_k=drafted)
    price = [0.010, 0.012, 0.014, 0.016]
    step = {k: sum(n * price[j] for j, n in enumerate(h)) / sum(h) + 0.001 + 0.0005 for k, h in drafted.items()}
    speed = {k: (t / c) / step[k] for k, (t, c) in calls.items()}
    out = prediction_metrics(timed, 1.2)
    assert out["predicted_speedup_by_k"] == pytest.approx({str(k): 1.2 * speed[k] / speed[2] for k in calls})
    # Without the replay's widths every step is a full block: v(k+1) + the lookup + o.
    plain = prediction_metrics(record(timed.rounds[0], costs, calls_by_k=calls, time_split=split), 1.2)
    full = {k: (t / c) / (price[k] + 0.0015) for k, (t, c) in calls.items()}
    assert plain["predicted_speedup_by_k"] == pytest.approx({str(k): 1.2 * full[k] / full[2] for k in calls})
    # Full blocks recorded as widths predict the same as no widths at all.
    only_full = {k: [0] * k + [sum(h)] for k, h in drafted.items()}
    same = prediction_metrics(record(timed.rounds[0], costs, calls_by_k=calls, time_split=split,
                                     drafted_by_k=only_full), 1.2)
    assert same["predicted_speedup_by_k"] == pytest.approx(plain["predicted_speedup_by_k"])


class WidthRecorder(ModelForward):
    """The engine's verifier forward, recording how many tokens each call fed."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.widths: list[int] = []

    def __call__(self, input_ids: torch.Tensor, cache: RollbackCache, logits_to_keep: int) -> torch.Tensor:
        self.widths.append(input_ids.shape[1])
        return super().__call__(input_ids, cache, logits_to_keep)


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    return tiny_gpt2(), tiny_gpt2(n_layer=1, n_embd=32, seed=1)


@pytest.mark.parametrize("kind", ["prompt-lookup", "model"])
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["repeat", "one-token", "long"])
def test_the_widths_read_back_are_the_widths_the_engine_ran(models, kind, k, prompt):
    """The verifier's calls after the prefill, by width, are the counters' steps per drafted count (width - 1); the
    replay (step by step for prompt lookup, walked along teacher-forced matches for a model) records the same."""
    verifier, draft = models
    forward = WidthRecorder(verifier)
    drafter = PromptLookupDrafter(max_ngram=3) if kind == "prompt-lookup" else ModelDrafter(draft)
    out = decode(forward, prompt, drafter=drafter, k=k, max_new_tokens=N_NEW)
    assert forward.widths[0] == len(prompt)  # the prefill
    ran = Counter(forward.widths[1:])
    counts = drafted_counts(out)
    assert counts == [ran[j + 1] for j in range(k + 1)]
    if kind == "prompt-lookup":
        assert counts[0] > 0 and counts[k] > 0  # steps with no proposal run a one-token verifier forward
        replayed = audit_drafter(PromptLookupDrafter(max_ngram=3), prompt, out.tokens, k=k,
                                 max_new_tokens=N_NEW).drafted
    else:
        replayed = block_drafted(draft_matches(draft, prompt, out.tokens), k, N_NEW)
    assert replayed == counts


def test_the_suites_replay_records_the_widths_the_engine_runs_at_every_k():
    """On the embedded family: for each k the replay's steps per drafted count, summed over the acceptance slice,
    are those of the engine decoding those prompts at that k."""
    from specperf.bench.suite import SuiteBench
    from specperf.config import parse_config
    from specperf.config.cases import build_cases

    suite = {"verifier": "embedded:verifier", "device": "cpu", "threads": 1,
             "drafts": [{"name": "small", "model": "embedded:draft-small"},
                        {"name": "lookup", "drafter": "prompt-lookup"}],
             "k": [2], "dataset": {"source": "embedded", "slices": ["0:2"], "acceptance_slice": "2:5"},
             "generation": {"max_new_tokens": 12}}
    bench = SuiteBench(parse_config(suite))
    verifier, prompts = bench.store.verifier.model, bench.store.prompts("2:5").ids
    for case in (c for c in build_cases(bench.config)[0] if c.draft is not None):
        drafted = bench.replayer.drafted(case)
        assert sorted(drafted) == list(range(1, 9))
        assert case.draft is not None
        drafter = bench.runner.drafter(case.draft)
        for k in (1, 2, 5):
            results = [decode(verifier, p, drafter=drafter, k=k, max_new_tokens=12) for p in prompts]
            per_request = [drafted_counts(r) or [] for r in results]
            assert drafted[k] == [sum(column) for column in zip(*per_request)], (case.draft.name, k)
