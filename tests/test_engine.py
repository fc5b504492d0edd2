"""The engine's contract: lossless greedy decoding, exact work counts, stops, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

import specperf
from specperf import ModelDrafter, PromptLookupDrafter
from tests.tiny_models import PROMPTS, clone_weights, hf_greedy, tiny_gpt2, tiny_llama

N_NEW = 24


def _drafter(kind: str, random_draft: torch.nn.Module, identical_draft: torch.nn.Module) -> specperf.Drafter:
    if kind == "random":
        return ModelDrafter(random_draft)
    if kind == "identical":
        return ModelDrafter(identical_draft)
    return PromptLookupDrafter(max_ngram=3)


@pytest.mark.parametrize("prompt", PROMPTS, ids=["repeat", "one-token", "long"])
def test_baseline_equals_hf_generate(verifier, prompt):
    assert specperf.decode(verifier, prompt, max_new_tokens=N_NEW).tokens == hf_greedy(verifier, prompt, N_NEW)


@pytest.mark.parametrize("kind", ["random", "identical", "prompt-lookup"])
@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["repeat", "one-token", "long"])
def test_greedy_speculative_is_lossless(verifier, random_draft, identical_draft, kind, k, prompt):
    expected = hf_greedy(verifier, prompt, N_NEW)
    result = specperf.decode(verifier, prompt, drafter=_drafter(kind, random_draft, identical_draft), k=k,
                             max_new_tokens=N_NEW)
    assert result.tokens == expected
    assert result.proposed == sum(result.position_proposed)
    assert result.accepted == sum(result.position_accepted)
    assert sum(i * c for i, c in enumerate(result.accept_counts)) == result.accepted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_other_verifier_seeds_are_lossless(seed):
    verifier, draft = tiny_gpt2(seed=10 + seed), tiny_gpt2(n_layer=1, n_embd=32, seed=20 + seed)
    prompt = [seed + 3, 17, 29, 17, 29, 4]
    expected = hf_greedy(verifier, prompt, N_NEW)
    for drafter in (ModelDrafter(draft), PromptLookupDrafter()):
        assert specperf.decode(verifier, prompt, drafter=drafter, k=3, max_new_tokens=N_NEW).tokens == expected


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_identical_draft_accepts_everything(verifier, identical_draft, k):
    n = 40
    result = specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(identical_draft), k=k, max_new_tokens=n)
    assert result.proposed and result.accepted == result.proposed
    assert result.accepted == result.proposed
    assert result.verifier_calls <= math.ceil(n / (k + 1)) + 1
    # Prefill gives one token, then every full block gives k + 1, and the last block is trimmed to fit n.
    assert result.verifier_calls == 1 + math.ceil((n - 1) / (k + 1))


def test_random_draft_counts_are_exact(verifier, random_draft):
    result = specperf.decode(verifier, PROMPTS[2], drafter=ModelDrafter(random_draft), k=4, max_new_tokens=N_NEW)
    steps = result.verifier_calls - 1
    # Only the final step may be a plain verifier step: with one token left there is nothing to draft.
    assert steps - sum(result.accept_counts) == 1
    # Each step emits its accepted drafts plus one verifier token; the prefill emits one.
    assert result.new_tokens == 1 + steps + result.accepted
    # The draft spends one forward per proposed token.
    assert result.draft_calls == result.proposed
    # Every block was rejected outright, so the draft fed the prompt once and then one position per proposal.
    assert result.accepted == 0
    assert result.draft_tokens == len(PROMPTS[2]) + result.proposed
    assert result.verifier_tokens == len(PROMPTS[2]) + result.proposed + steps


def test_baseline_counts_are_exact(verifier):
    result = specperf.decode(verifier, PROMPTS[0], max_new_tokens=N_NEW)
    assert result.verifier_calls == N_NEW
    assert result.verifier_tokens == len(PROMPTS[0]) + N_NEW - 1
    assert result.draft_calls == 0 and result.proposed is None
    assert result.mean_accepted_length == pytest.approx(result.new_tokens / result.verifier_calls)


@pytest.mark.parametrize("max_new", [1, 2, 3, 5, 6, 7, 11, 23])
@pytest.mark.parametrize("kind", ["identical", "prompt-lookup"])
def test_max_new_tokens_is_exact(verifier, random_draft, identical_draft, kind, max_new):
    result = specperf.decode(verifier, PROMPTS[0], drafter=_drafter(kind, random_draft, identical_draft), k=4,
                             max_new_tokens=max_new)
    assert result.new_tokens == max_new
    assert result.tokens == hf_greedy(verifier, PROMPTS[0], max_new)
    assert result.stop_reason == "length"


def test_eos_inside_an_accepted_block_stops_there(verifier, identical_draft):
    reference = specperf.decode(verifier, PROMPTS[2], max_new_tokens=40).tokens
    # Pick a token first emitted inside a block (not the block's last token) so EOS lands mid-block.
    k = 8
    position = next(i for i in range(2, 30) if reference[i] not in reference[:i] and (i - 1) % (k + 1) not in (k,))
    eos = reference[position]
    result = specperf.decode(verifier, PROMPTS[2], drafter=ModelDrafter(identical_draft), k=k, max_new_tokens=40,
                             eos_token_id=eos)
    assert result.tokens == reference[: position + 1]
    assert result.stop_reason == "eos"
    assert result.accepted <= result.proposed
    baseline = specperf.decode(verifier, PROMPTS[2], max_new_tokens=40, eos_token_id=eos)
    assert baseline.tokens == result.tokens and baseline.stop_reason == "eos"


def test_eos_as_first_token_stops_at_once(verifier, random_draft):
    first = specperf.decode(verifier, PROMPTS[0], max_new_tokens=1).tokens[0]
    result = specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(random_draft), max_new_tokens=10,
                             eos_token_id=first)
    assert result.tokens == [first]
    assert result.verifier_calls == 1 and result.proposed == 0


def test_hf_assisted_decode_matches_hf_greedy(verifier, random_draft, identical_draft):
    expected = hf_greedy(verifier, PROMPTS[0], N_NEW)
    result = specperf.hf_assisted_decode(verifier, PROMPTS[0], random_draft, k=4, max_new_tokens=N_NEW)
    assert result.tokens == expected
    assert result.proposed is None  # HF hides how many tokens it drafted: unknown, never zero
    assert result.draft_calls is None and result.verifier_tokens is None
    same = specperf.hf_assisted_decode(verifier, PROMPTS[0], identical_draft, k=4, max_new_tokens=N_NEW)
    assert same.tokens == expected
    # A constant block of k: an identical draft fills every block, so a call emits k + 1 tokens.
    assert same.verifier_calls == math.ceil(N_NEW / 5)


def test_hf_assisted_decode_restores_the_draft_config(verifier, random_draft):
    before = random_draft.generation_config.to_dict()
    specperf.hf_assisted_decode(verifier, PROMPTS[0], random_draft, k=3, max_new_tokens=5)
    assert random_draft.generation_config.to_dict() == before


@pytest.mark.parametrize("k", [1, 4, 8])
def test_llama_architecture_is_lossless(k):
    verifier, draft = tiny_llama(seed=0), tiny_llama(n_layer=1, hidden=32, seed=1)
    for prompt in PROMPTS:
        expected = hf_greedy(verifier, prompt, N_NEW)
        assert specperf.decode(verifier, prompt, max_new_tokens=N_NEW).tokens == expected
        for drafter in (ModelDrafter(draft), ModelDrafter(clone_weights(verifier)), PromptLookupDrafter()):
            result = specperf.decode(verifier, prompt, drafter=drafter, k=k, max_new_tokens=N_NEW)
            assert result.tokens == expected


def test_sampling_is_reproducible_with_a_seed(verifier, random_draft):
    def run(seed: int) -> list[int]:
        return specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(random_draft), k=3, max_new_tokens=16,
                               temperature=1.0, seed=seed).tokens

    assert run(7) == run(7)
    assert any(run(7) != run(s) for s in range(8, 12))


def test_timings_are_consistent(verifier, random_draft):
    result = specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(random_draft), max_new_tokens=8)
    assert 0 < result.ttft_s <= result.wall_s
    assert result.tpot_s is not None and result.tpot_s >= 0
    assert result.latency == pytest.approx(result.wall_s / 8)


@pytest.mark.parametrize("k", [0, -1, 65, 2.5])
def test_bad_k_is_refused(verifier, random_draft, k):
    with pytest.raises(specperf.ConfigError, match="k .* must be an integer in 1..64"):
        specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(random_draft), k=k)


def test_bad_arguments_are_refused(verifier):
    with pytest.raises(specperf.ConfigError, match="max_new_tokens"):
        specperf.decode(verifier, PROMPTS[0], max_new_tokens=0)
    with pytest.raises(specperf.ConfigError, match="temperature"):
        specperf.decode(verifier, PROMPTS[0], temperature=-1.0)
    with pytest.raises(specperf.ConfigError, match="empty"):
        specperf.decode(verifier, [])
    with pytest.raises(specperf.ConfigError, match="one prompt per call"):
        specperf.decode(verifier, torch.ones(2, 3, dtype=torch.long))


def test_vocabulary_mismatch_is_refused(verifier):
    other = tiny_gpt2(n_layer=1, n_embd=32, vocab=VOCAB_OTHER)
    with pytest.raises(specperf.ModelError, match=f"{VOCAB_OTHER} tokens but the verifier has 97"):
        specperf.decode(verifier, PROMPTS[0], drafter=ModelDrafter(other))


VOCAB_OTHER = 101


def test_prompt_past_the_context_window_is_refused(verifier):
    with pytest.raises(specperf.ContextLengthError, match="context window is 256 tokens"):
        specperf.decode(verifier, [3] * 250, max_new_tokens=10)


def test_eos_default_is_none(verifier):
    """Without an EOS id the engine decodes exactly max_new_tokens, through any token; given one, it stops at the
    first time the verifier emits it. A token the verifier emits mid-output stands in for EOS here."""
    result = specperf.decode(verifier, PROMPTS[1], max_new_tokens=30)
    assert result.new_tokens == 30 and result.stop_reason == "length"
    eos = result.tokens[10]
    first = result.tokens.index(eos)
    assert first < 29  # decoding went on past it
    for drafter in (None, PromptLookupDrafter()):
        stopped = specperf.decode(verifier, PROMPTS[1], drafter=drafter, k=4, max_new_tokens=30, eos_token_id=eos)
        assert stopped.stop_reason == "eos" and stopped.tokens == result.tokens[: first + 1]
