"""Batched decoding: every row equals its batch-1 run (tokens and counts); sampling keeps the verifier's
distribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import specperf
from specperf.engine import batch as batch_module
from specperf.engine.batch import decode_batch
from specperf.errors import ConfigError, ContextLengthError
from tests.test_sampling import N_SAMPLES, PROMPT, V, chi_square, chi_square_critical, exact_joint
from tests.tiny_models import clone_weights, tiny_llama

# Very different lengths: 1 token to 70, repetitive ones that prompt lookup can use, and random ones.
LONG = [(7 * i) % 89 + 2 for i in range(70)]
BATCH_PROMPTS = [[42], LONG, [5, 6, 7, 8, 9, 10, 5, 6, 7], [11, 12, 13, 11, 12], LONG[:23], [3, 14, 15, 92, 65],
                 [9] * 30, [20, 21, 22, 23, 20, 21, 22, 23, 20, 21]]
FIELDS = ("tokens", "stop_reason", "proposed", "accepted", "accept_counts", "position_proposed",
          "position_accepted", "verifier_calls", "verifier_tokens", "draft_calls", "draft_tokens")
MAX_NEW = 30


def _noisy(model: torch.nn.Module, scale: float = 0.25) -> torch.nn.Module:
    """The model with noise on its MLPs: agrees with it often, not always."""
    draft = clone_weights(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, weight in draft.named_parameters():
            if "mlp" in name:
                weight.add_(torch.randn(weight.shape, generator=generator) * scale)
    return draft


@pytest.fixture(scope="module")
def noisy_draft(verifier):
    return _noisy(verifier)


@pytest.fixture(scope="module")
def eos_ids(verifier):
    """Tokens that the verifier emits in some rows but not others, at different steps: EOS stops rows unevenly."""
    outputs = [specperf.decode(verifier, p, max_new_tokens=MAX_NEW).tokens for p in BATCH_PROMPTS]
    seen = Counter(t for tokens in outputs for t in set(tokens))
    picks = [t for t, n in seen.most_common() if 1 < n < len(BATCH_PROMPTS) - 1][:2]
    assert picks, "no token stops some rows but not others"
    return picks


def _drafter(kind: str, draft: torch.nn.Module | None) -> specperf.Drafter | None:
    if kind == "model":
        return specperf.ModelDrafter(draft)
    return specperf.PromptLookupDrafter(max_ngram=3) if kind == "prompt-lookup" else None


def _assert_rows_equal_batch_one(verifier, prompts, kind, draft, *, k, eos=None):
    batched = decode_batch(verifier, prompts, drafter=_drafter(kind, draft), k=k, max_new_tokens=MAX_NEW,
                           eos_token_id=eos)
    assert len(batched) == len(prompts)
    for i, (prompt, row) in enumerate(zip(prompts, batched)):
        alone = specperf.decode(verifier, prompt, drafter=_drafter(kind, draft), k=k, max_new_tokens=MAX_NEW,
                                eos_token_id=eos)
        for name in FIELDS:
            assert getattr(row, name) == getattr(alone, name), f"row {i}: {name}"
    return batched


@pytest.mark.parametrize("kind", ["baseline", "model", "prompt-lookup"])
@pytest.mark.parametrize("size", [2, 3, 8])
@pytest.mark.parametrize("k", [1, 4])
def test_rows_equal_batch_one(verifier, noisy_draft, kind, size, k):
    prompts = BATCH_PROMPTS[:size] if size != 2 else [BATCH_PROMPTS[0], BATCH_PROMPTS[1]]  # 1 and 70 tokens
    _assert_rows_equal_batch_one(verifier, prompts, kind, noisy_draft, k=k)


@pytest.mark.parametrize("kind", ["baseline", "model", "prompt-lookup"])
def test_rows_stop_at_eos_at_different_steps(verifier, noisy_draft, eos_ids, kind):
    for eos in eos_ids:
        batched = _assert_rows_equal_batch_one(verifier, BATCH_PROMPTS, kind, noisy_draft, k=3, eos=eos)
        stops = Counter(r.stop_reason for r in batched)
        assert stops["eos"] >= 2 and len({r.new_tokens for r in batched}) >= 3


def test_llama_rows_equal_batch_one():
    """RoPE models take their positions from position_ids: a left-padded row must not shift them."""
    verifier = tiny_llama(seed=0)
    _assert_rows_equal_batch_one(verifier, BATCH_PROMPTS[:5], "model", _noisy(verifier), k=3)
    _assert_rows_equal_batch_one(verifier, BATCH_PROMPTS[:5], "baseline", None, k=3)


def test_identical_draft_accepts_everything(verifier, identical_draft):
    rows = decode_batch(verifier, BATCH_PROMPTS[:4], drafter=specperf.ModelDrafter(identical_draft), k=4,
                        max_new_tokens=MAX_NEW)
    assert all(r.accepted == r.proposed > 0 for r in rows)
    assert all(r.verifier_calls == 1 + -(-(MAX_NEW - 1) // 5) for r in rows)  # prefill + ceil(29 / 5) steps


def test_finished_rows_stop_costing_work(verifier, eos_ids):
    rows = decode_batch(verifier, BATCH_PROMPTS, max_new_tokens=MAX_NEW, eos_token_id=eos_ids[0])
    for row in rows:
        assert row.verifier_calls == row.new_tokens  # one forward per token it emitted, none after it stopped
    batch_wall = max(r.wall_s for r in rows)
    assert all(0 < r.ttft_s <= r.wall_s <= batch_wall for r in rows)
    assert {r.extra["batch_size"] for r in rows} == {len(BATCH_PROMPTS)}


def _batch_counts(verifier, drafter, n: int) -> np.ndarray:
    counts = np.zeros((V, V, V), dtype=np.int64)
    for tokens in (r.tokens for r in decode_batch(verifier, [PROMPT] * n, drafter=drafter, k=2, max_new_tokens=3,
                                                  temperature=1.0, seed=0)):
        counts[tuple(tokens)] += 1
    return counts


@pytest.fixture(scope="module")
def pair():
    from tests.test_sampling import random_gpt2

    return random_gpt2(3, 2), random_gpt2(4, 1)


@pytest.mark.parametrize("kind", ["model", "prompt-lookup"])
def test_batched_sampling_matches_the_verifier(pair, kind):
    verifier, draft = pair
    drafter = specperf.ModelDrafter(draft) if kind == "model" else specperf.PromptLookupDrafter(max_ngram=2)
    stat, df = chi_square(_batch_counts(verifier, drafter, N_SAMPLES), exact_joint(verifier, 1.0))
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} over {df} degrees of freedom"


def test_batched_chi_square_has_power(pair, monkeypatch):
    """Accepting every draft token samples the draft's distribution; the test must reject it."""
    verifier, draft = pair
    real = batch_module.rejection_sample

    def accept_all(logits, proposal, temperature, generator, in_block):
        accept, fallback = real(logits, proposal, temperature, generator, in_block)
        return in_block, fallback

    monkeypatch.setattr(batch_module, "rejection_sample", accept_all)
    stat, df = chi_square(_batch_counts(verifier, specperf.ModelDrafter(draft), 800), exact_joint(verifier, 1.0))
    assert stat > chi_square_critical(df)


@pytest.mark.parametrize("prompts, kwargs, error, words", [
    ([], {}, ConfigError, "prompts is empty"),
    ([[1, 2], []], {}, ConfigError, "a prompt is empty"),
    ([[1, 2]], {"k": 0}, ConfigError, "k \\(draft block size\\)"),
    ([[1] * 250], {"max_new_tokens": 10}, ContextLengthError, "context window is 256"),
])
def test_bad_input(verifier, noisy_draft, prompts, kwargs, error, words):
    with pytest.raises(error, match=words):
        decode_batch(verifier, prompts, drafter=specperf.ModelDrafter(noisy_draft), **kwargs)
