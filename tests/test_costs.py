"""Step-cost probes: what they run, in which order, on which caches (the bound reads their ratios)."""

from __future__ import annotations

import pytest

from specperf.engine.costs import WARMUP, Probe, _Armed, probe_seconds
from specperf.engine.forward import new_cache
from tests.conftest import tiny_llama

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
    a, b = _Armed(Probe.step(model, CONTEXT, 1, chain=2), caches), _Armed(Probe.step(model, CONTEXT, 3), caches)
    p = _Armed(Probe.prefill(model, CONTEXT), caches)
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
