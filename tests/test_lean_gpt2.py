"""The lean GPT-2 forward: bitwise transformers' logits, the same decoding, and transformers' forward where it must.

The tests that run models run them on the CPU, or on the device SPECPERF_TEST_DEVICE names (``cuda``, ``cuda:1``):
tools/gpu_check.py runs this file with SPECPERF_TEST_DEVICE=cuda, so the bitwise checks hold for the CUDA kernels
in float32, float16 and bfloat16 too.
"""

from __future__ import annotations

import os

import pytest
import torch

from specperf import ModelDrafter, decode, decode_batch
from specperf.bench.breakdown import measure_split
from specperf.config import parse_config
from specperf.engine.cache import rollback
from specperf.engine.forward import ModelForward, new_cache
from specperf.engine.lean_gpt2 import LeanGPT2
from specperf.errors import ConfigError
from specperf.records import DecodeResult
from tests.tiny_models import PROMPTS, clone_weights, tiny_gpt2, tiny_llama

DEVICE = torch.device(os.environ.get("SPECPERF_TEST_DEVICE", "cpu"))

# (new tokens fed, logits kept, rolled back afterwards): a prefill keeping one logit as the engine's does, single
# tokens, blocks after a cache, a rollback in between, every logit kept
STEPS = [([5, 6, 7, 8, 9, 10, 11], 1, 0), ([12], 1, 0), ([13, 14, 15, 16, 17], 5, 3), ([18], 1, 1),
         ([19, 20], 2, 0), ([21, 22, 23], 0, 0)]


def on_device(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself on the CPU; elsewhere a copy on DEVICE, so the session's shared models stay where they are."""
    return model if DEVICE.type == "cpu" else clone_weights(model).to(DEVICE)


@pytest.fixture(scope="module")
def verifier(verifier: torch.nn.Module) -> torch.nn.Module:
    return on_device(verifier)


@pytest.fixture(scope="module")
def random_draft(random_draft: torch.nn.Module) -> torch.nn.Module:
    return on_device(random_draft)


def _logits_along(model: torch.nn.Module, path: str, batch: int) -> list[torch.Tensor]:
    run, cache, out = ModelForward(model, path), new_cache(), []
    with torch.inference_mode():
        for tokens, keep, drop in STEPS:
            ids = (torch.tensor([tokens]).repeat(batch, 1) + torch.arange(batch)[:, None]).to(DEVICE)  # (B, n)
            out.append(run(ids, cache, keep))  # (B, keep or n, V)
            rollback(cache, drop)
    return out


VARIANTS = {
    "fp32": ({}, torch.float32, 1),
    "bf16": ({}, torch.bfloat16, 1),
    "fp16-batch2": ({}, torch.float16, 2),
    "layer-index-scaling": ({"scale_attn_by_inverse_layer_idx": True}, torch.float32, 1),
    "unscaled-relu-n_inner": ({"scale_attn_weights": False, "activation_function": "relu", "n_inner": 48},
                              torch.float32, 1),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_are_bitwise_transformers(variant: str) -> None:
    changes, dtype, batch = VARIANTS[variant]
    model = tiny_gpt2(n_layer=3, n_embd=64, seed=3, **changes).to(DEVICE, dtype)
    assert ModelForward(model).lean is not None
    lean, reference = _logits_along(model, "lean", batch), _logits_along(model, "transformers", batch)
    for got, want in zip(lean, reference, strict=True):
        assert got.shape == want.shape and torch.equal(got, want)


def test_greedy_and_speculative_decoding_are_unchanged(verifier: torch.nn.Module,
                                                       random_draft: torch.nn.Module) -> None:
    runs = {}
    for path in ("lean", "transformers"):
        v, d = ModelForward(verifier, path), ModelForward(random_draft, path)
        runs[path] = [(decode(v, p, max_new_tokens=20),
                       decode(v, p, drafter=ModelDrafter(d), k=3, max_new_tokens=20),
                       decode(v, p, drafter=ModelDrafter(d), k=3, max_new_tokens=20, temperature=0.8, seed=7))
                      for p in PROMPTS]
    for lean_runs, hf_runs in zip(runs["lean"], runs["transformers"], strict=True):
        for lean, hf in zip(lean_runs, hf_runs, strict=True):
            assert lean.tokens == hf.tokens
            assert (lean.verifier_calls, lean.draft_calls, lean.accept_counts) == \
                (hf.verifier_calls, hf.draft_calls, hf.accept_counts)


def test_the_lean_forward_runs_for_gpt2_only() -> None:
    gpt2, llama = tiny_gpt2(n_layer=1, n_embd=32, seed=4), tiny_llama(n_layer=1, hidden=32, seed=4)
    lean = ModelForward(gpt2)
    assert isinstance(lean.lean, LeanGPT2) and lean.path == "lean"
    assert ModelForward(llama).lean is None
    assert ModelForward(gpt2, "transformers").lean is None
    gpt2.train()
    assert lean.lean is None  # dropout and training belong to transformers
    chosen = ModelForward(gpt2, "lean")
    assert chosen.lean is None
    gpt2.eval()
    assert chosen.lean is not None and lean.lean is not None  # made in training mode, used once back in eval mode
    with pytest.raises(ValueError, match="'lean', 'packed', 'transformers'"):
        ModelForward(gpt2, "fast")


def test_anything_that_changes_transformers_computation_keeps_its_forward() -> None:
    hooked = tiny_gpt2(n_layer=1, n_embd=32, seed=5)
    hooked.transformer.h[0].mlp.register_forward_hook(lambda _m, _a, out: out * 0)
    assert ModelForward(hooked).lean is None
    swapped = tiny_gpt2(n_layer=1, n_embd=32, seed=5)
    swapped.transformer.h[0].attn.c_attn = torch.nn.Sequential(swapped.transformer.h[0].attn.c_attn)
    assert ModelForward(swapped).lean is None
    quantized = tiny_gpt2(n_layer=1, n_embd=32, seed=5)
    quantized.hf_quantizer = object()
    assert ModelForward(quantized).lean is None
    eager = tiny_gpt2(n_layer=1, n_embd=32, seed=5)
    run = ModelForward(eager)
    assert run.lean is not None
    eager.set_attn_implementation("eager")
    assert run.lean is None and ModelForward(eager).lean is None


@pytest.mark.parametrize("batch", [1, 3])
def test_the_time_breakdown_sees_lean_forwards(verifier: torch.nn.Module, random_draft: torch.nn.Module,
                                               batch: int) -> None:
    """At batch 1 and batched: both engines run the forwards they are given (whose lean modules are hooked)."""
    v, d = ModelForward(verifier), ModelForward(random_draft)
    assert v.lean is not None and d.lean is not None

    def run() -> list[DecodeResult]:
        if batch == 1:
            return [decode(v, PROMPTS[0], drafter=ModelDrafter(d), k=3, max_new_tokens=16)]
        return decode_batch(v, PROMPTS[:batch], drafter=ModelDrafter(d), k=3, max_new_tokens=16)

    split = measure_split(run, verifier=v, draft=d, lookup=None, batch_size=batch)
    assert 0 < split.verifier_s < split.wall_s
    assert 0 < split.draft_s < split.wall_s
    assert split.verifier_s + split.draft_s < split.wall_s


def test_forward_is_a_suite_key() -> None:
    base = {"verifier": "embedded:verifier", "drafts": [{"name": "d", "model": "embedded:draft-small"}]}
    assert parse_config(base).forward == "lean"
    assert parse_config({**base, "forward": "transformers"}).forward == "transformers"
    with pytest.raises(ConfigError, match="forward") as err:
        parse_config({**base, "forward": "fast"})
    assert "lean" in str(err.value) and "transformers" in str(err.value)


def test_the_suite_key_reaches_the_models() -> None:
    from specperf.bench.store import ModelStore

    suite = {"verifier": "embedded:verifier", "device": str(DEVICE),
             "drafts": [{"name": "d", "model": "embedded:draft-small"}]}
    lean = ModelStore(parse_config(suite))
    plain = ModelStore(parse_config({**suite, "forward": "transformers"}))
    assert isinstance(lean.verifier.forward.lean, LeanGPT2)
    assert plain.verifier.forward.lean is None and plain.verifier.forward.path == "transformers"
    assert plain.model("embedded:draft-small").forward.lean is None
    # The runner decodes with the store's forwards, so the choice reaches every loop.
    from specperf.bench.runner import CaseRunner

    drafter = CaseRunner(plain, plain.config).drafter(plain.config.drafts[0])
    assert isinstance(drafter, ModelDrafter) and drafter.forward is plain.model("embedded:draft-small").forward
