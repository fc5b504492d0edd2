"""The packed forward (``forward: packed``): the lean GPT-2 forward with oneDNN matmuls on prepacked weights.

Not bitwise transformers' logits, so these tests bound the difference, and check exactly what the engine relies on:
one row's logits do not depend on how many rows a call carries, so speculative decoding, batched or not, emits the
packed verifier-only baseline's tokens.
"""

from __future__ import annotations

import pytest
import torch

from specperf import ModelDrafter, decode, decode_batch
from specperf.engine.forward import ModelForward, new_cache
from specperf.engine.lean_gpt2 import LeanGPT2, PackedGPT2
from tests.tiny_models import PROMPTS, tiny_gpt2, tiny_llama

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


def _prefill(run: ModelForward, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return run(ids, new_cache(), 0)  # (B, n, V)


def test_packed_is_chosen_only_for_float32_gpt2_on_the_cpu() -> None:
    gpt2 = tiny_gpt2(n_layer=1, n_embd=32, seed=4)
    packed = ModelForward(gpt2, "packed")
    assert type(packed.lean) is PackedGPT2
    assert type(ModelForward(gpt2, "lean").lean) is LeanGPT2
    assert ModelForward(tiny_llama(n_layer=1, hidden=32, seed=4), "packed").lean is None
    assert type(ModelForward(tiny_gpt2(n_layer=1, n_embd=32, seed=4).to(torch.bfloat16), "packed").lean) is LeanGPT2
    gpt2.to(torch.float64)
    assert packed.lean is None  # moved out of float32 after the pack: transformers' forward runs


def test_logits_stay_close_to_transformers(verifier: torch.nn.Module) -> None:
    ids = torch.tensor([PROMPTS[2][:20], PROMPTS[2][5:25]])  # (2, 20)
    packed = _prefill(ModelForward(verifier, "packed"), ids)
    reference = _prefill(ModelForward(verifier, "transformers"), ids)
    assert torch.allclose(packed, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(packed.argmax(-1), reference.argmax(-1))


def test_a_row_computes_the_same_alone_and_in_a_batch(verifier: torch.nn.Module) -> None:
    run = ModelForward(verifier, "packed")
    ids = torch.randint(0, 50, (8, 6), generator=torch.Generator().manual_seed(0))  # (8, 6)
    together = _prefill(run, ids)
    for row in range(ids.shape[0]):
        assert torch.equal(_prefill(run, ids[row : row + 1])[0], together[row])


def test_a_one_row_call_computes_what_the_row_does_among_others() -> None:
    """A batch-1 decode step's products carry one row: oneDNN runs one row on another kernel, so the forward runs it
    as two. One token alone gives the logits it gives in a batch of eight one-token prompts. The embedded verifier's
    width: at its 1536-wide MLP projection oneDNN's one-row sums differ in the last bits (AMD EPYC, torch 2.13)."""
    run = ModelForward(tiny_gpt2(n_layer=1, n_embd=384, seed=5), "packed")
    ids = torch.tensor([[token] for token in PROMPTS[2][:8]])  # (8, 1)
    together = _prefill(run, ids)  # (8, 1, V)
    for row in range(ids.shape[0]):
        assert torch.equal(_prefill(run, ids[row : row + 1])[0], together[row]), row


def test_a_weight_written_in_place_is_packed_again() -> None:
    gpt2 = tiny_gpt2(n_layer=1, n_embd=32, seed=4)
    run, ids = ModelForward(gpt2, "packed"), torch.tensor([[5, 6, 7]])
    before = _prefill(run, ids)
    with torch.no_grad():
        gpt2.transformer.h[0].mlp.c_fc.weight.mul_(2.0)
        gpt2.lm_head.weight.mul_(0.5)  # tied to the embedding: both change
    after = _prefill(run, ids)
    assert not torch.equal(before, after)
    assert torch.allclose(after, _prefill(ModelForward(gpt2, "transformers"), ids), rtol=1e-4, atol=1e-4)


def test_speculative_decoding_emits_the_packed_baseline(verifier: torch.nn.Module,
                                                        random_draft: torch.nn.Module) -> None:
    run = ModelForward(verifier, "packed")
    drafter = ModelDrafter(ModelForward(random_draft, "packed"))
    baseline = [decode(run, p, max_new_tokens=24).tokens for p in PROMPTS]
    for k in (1, 4):
        assert [decode(run, p, drafter=drafter, k=k, max_new_tokens=24).tokens for p in PROMPTS] == baseline
        batched = decode_batch(run, PROMPTS, drafter=drafter, k=k, max_new_tokens=24)
        assert [r.tokens for r in batched] == baseline
    assert [r.tokens for r in decode_batch(run, PROMPTS, max_new_tokens=24)] == baseline
