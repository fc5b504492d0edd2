"""Step-cost probes: what they run, in which order, on which caches (the bound reads their ratios)."""

from __future__ import annotations

import pytest

from specperf.engine.costs import WARMUP, ArmedProbe, Probe, probe_seconds
from specperf.engine.forward import ModelForward, new_cache
from tests.tiny_models import tiny_llama

CONTEXT = (5, 6, 7, 8, 9, 10, 11, 12)


def _count_calls(model) -> list[int]:
    widths: list[int] = []
    model.register_forward_hook(lambda _m, _args, kwargs, _out: widths.append(kwargs["input_ids"].shape[1]),
                                with_kwargs=True)
    return widths


def test_probes_run_their_forwards_interleaved_with_chains_and_sparse_rounds() -> None:
    model = tiny_llama(n_layer=1, hidden=32, seed=6)  # transformers' forward: hooks see every call
    widths = _count_calls(model)
    step, block, prefill = Probe.step(model, CONTEXT, 1, chain=3), Probe.step(model, CONTEXT, 4), \
        Probe.prefill(model, CONTEXT, every=3)
    seconds = probe_seconds([step, block, prefill], reps=6)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    # One context fill shared by the two step probes; then per round: 3 chained 1-token forwards, a 4-token forward,
    # and the prefill in rounds 0 and 3 only.
    rounds = WARMUP + 6
    assert widths.count(len(CONTEXT)) == 1 + WARMUP + 2
    assert widths.count(1) == 3 * rounds
    assert widths.count(4) == rounds
    assert widths[1 : 1 + 3] == [1, 1, 1]  # warm-up follows probe order: the chain first


def test_probes_of_one_model_and_context_share_a_cache_and_leave_it_as_found() -> None:
    model = tiny_llama(n_layer=1, hidden=32, seed=7)
    caches: dict = {}
    a, b = ArmedProbe(Probe.step(model, CONTEXT, 1, chain=2), caches), ArmedProbe(Probe.step(model, CONTEXT, 3), caches)
    p = ArmedProbe(Probe.prefill(model, CONTEXT), caches)
    assert a.cache is b.cache and p.cache is not a.cache and len(caches) == 2
    for armed in (a, b, p):
        before = armed.cache.get_seq_length()
        armed.run()
        assert armed.cache.get_seq_length() == before
    assert a.cache.get_seq_length() == len(CONTEXT) and p.cache.get_seq_length() == 0
    assert new_cache().get_seq_length() == 0


def test_no_probes_measure_nothing() -> None:
    assert probe_seconds([]) == []
    with pytest.raises(ValueError):
        Probe.step(tiny_llama(n_layer=1, hidden=32, seed=8), CONTEXT, 0)


def _meter(monkeypatch, prompts: list[list[int]], max_new_tokens: int = 64):
    """A StepCostMeter over tiny GPT-2s (window 256) whose probe_seconds returns each probe's index."""
    from types import SimpleNamespace

    from specperf.bench import measure
    from specperf.config import parse_config
    from tests.tiny_models import tiny_gpt2

    seen: list[list[Probe]] = []
    rounds: list[int] = []

    def fake(probes, reps):
        seen.append(list(probes))
        rounds.append(reps)
        return [float(i) for i in range(len(probes))]

    monkeypatch.setattr(measure, "probe_seconds", fake)
    models = {"v": tiny_gpt2(n_layer=1, n_embd=32, seed=1), "d": tiny_gpt2(n_layer=1, n_embd=32, seed=2)}
    config = parse_config({"verifier": "v", "drafts": [{"name": "d", "model": "d"}],
                           "generation": {"max_new_tokens": max_new_tokens}, "timing": {"cost_rounds": 12}})
    forwards = {name: ModelForward(model) for name, model in models.items()}
    store = SimpleNamespace(verifier=SimpleNamespace(forward=forwards["v"]),
                            model=lambda name: SimpleNamespace(forward=forwards[name]),
                            prompts=lambda _slice: SimpleNamespace(ids=prompts))
    return measure.StepCostMeter(store, config.generation, config.timing), config, models, seen, rounds


def test_the_meter_maps_each_probe_to_its_cost(monkeypatch) -> None:
    from specperf.config.cases import Case

    meter, config, models, seen, rounds = _meter(monkeypatch, [list(range(5, 105)), list(range(7, 57))])
    costs = meter.case_costs(Case(config.drafts[0], 4, "0:2"))
    case_probes = seen[0]
    # v(1) twice, the draft's block of 4, v(5), then the prefills: verifier's two, draft's two
    assert [(p.forward.model is models["v"], len(p.block), p.chain, p.keep) for p in case_probes] == [
        (True, 1, 1, 0), (True, 1, 1, 0), (False, 1, 4, 0), (True, 5, 1, 0),
        (True, 100, 1, 1), (True, 50, 1, 1), (False, 100, 1, 1), (False, 50, 1, 1)]
    assert (costs.verifier_step_s, costs.draft_step_s, costs.verify_block_s) == (1.0, 2.0 / 4, 3.0)
    assert costs.verifier_prefill_s == (4.0, 5.0) and costs.draft_prefill_s == (6.0, 7.0)
    assert costs.verify_curve_s == tuple(float(i) for i in range(8))
    assert len(case_probes[0].context) == 100 + 32  # the prompt and half of max_new_tokens
    assert rounds == [12, 4]  # timing.cost_rounds for the case, a third of it for the curve


def test_the_decode_context_fits_the_window_and_the_largest_block(monkeypatch) -> None:
    from specperf.config.cases import Case

    meter, config, models, seen, _ = _meter(monkeypatch, [list(range(5, 250))], max_new_tokens=8)
    meter.case_costs(Case(config.drafts[0], 6, "0:1"))
    context = seen[0][0].context
    assert len(context) == 256 - 7  # the window less the verify block of k + 1
    assert all(len(p.context) + len(p.block) * p.chain <= 256 for p in seen[0] + seen[1])
    short, config, _, seen, _ = _meter(monkeypatch, [[5, 6]], max_new_tokens=2)
    short.case_costs(Case(config.drafts[0], 6, "0:1"))
    assert len(seen[0][0].context) == 7 and len(seen[1][0].context) == 9  # room for v(7), and for v(9) of the curve
