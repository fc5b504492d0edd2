"""The audit recomputes greedy acceptance independently of the engine; both must agree exactly."""

from __future__ import annotations

import pytest
import torch

import specperf
from specperf.bench.audit import audit_drafter, audit_model_draft, replay_blocks
from tests.tiny_models import PROMPTS, clone_weights


@pytest.fixture(scope="module")
def noisy_draft(verifier):
    """The verifier with noise on its last block: it agrees with the verifier often, not always."""
    draft = clone_weights(verifier)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in draft.transformer.h[1].mlp.parameters():
            weight.add_(torch.randn(weight.shape, generator=generator) * 0.25)
    return draft


def test_replay_blocks_by_hand():
    # Emitted tokens 1..8 (token 0 is the prefill's). k = 3:
    # step at pos 1: matches[0:3] = T, T, F -> accepts 2, emits 3 tokens; pos 4
    # step at pos 4: matches[3:6] = T, T, T -> accepts 3, emits 4 tokens; pos 8
    # step at pos 8: budget 9 - 8 - 1 = 0 drafts -> a plain verifier step, not counted
    matches = [True, True, False, True, True, True, False, True]
    assert replay_blocks(matches, 3, 9) == (6, 5, [0, 0, 1, 1])


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("prompt", PROMPTS, ids=["repeat", "one-token", "long"])
def test_model_audit_equals_engine_counters(verifier, noisy_draft, k, prompt):
    draft = noisy_draft
    result = specperf.decode(verifier, prompt, drafter=specperf.ModelDrafter(draft), k=k, max_new_tokens=30)
    audit = audit_model_draft(draft, prompt, result.tokens, k=k, max_new_tokens=30)
    assert (audit.proposed, audit.accepted, audit.accept_counts) == (
        result.proposed, result.accepted, result.accept_counts)
    assert 0 < result.accepted < result.proposed, "the test needs partial acceptance to mean anything"


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prompt_lookup_audit_equals_engine_counters(verifier, k):
    for prompt in PROMPTS:
        result = specperf.decode(verifier, prompt, drafter=specperf.PromptLookupDrafter(), k=k, max_new_tokens=30)
        audit = audit_drafter(specperf.PromptLookupDrafter(), prompt, result.tokens, k=k, max_new_tokens=30)
        assert (audit.proposed, audit.accepted) == (result.proposed, result.accepted)


def test_agreement_of_an_identical_draft_is_one(verifier, identical_draft):
    result = specperf.decode(verifier, PROMPTS[0], max_new_tokens=20)
    audit = audit_model_draft(identical_draft, PROMPTS[0], result.tokens, k=4, max_new_tokens=20)
    assert audit.agreement == 1.0 and audit.acceptance == 1.0


def test_divergence_margin_is_the_verifier_logit_gap(verifier):
    from specperf.bench.audit import divergence_margin

    prompt = PROMPTS[0]
    tokens = specperf.decode(verifier, prompt, max_new_tokens=6).tokens
    with torch.no_grad():
        logits = verifier(torch.tensor([prompt + tokens[:3]])).logits[0, -1]
    runner_up = int(logits.topk(2).indices[1])
    other = tokens[:3] + [runner_up] + tokens[4:]
    found = divergence_margin(verifier, prompt, tokens, other, 3)
    assert found is not None
    margin, magnitude = found
    assert margin == pytest.approx(float(logits[tokens[3]] - logits[runner_up]), abs=1e-5) and margin > 0
    assert magnitude == pytest.approx(max(abs(float(logits[tokens[3]])), abs(float(logits[runner_up]))), abs=1e-5)
    assert divergence_margin(verifier, prompt, tokens, tokens[:3], 3) is None  # the other output ended there


def test_the_divergence_margin_comes_from_the_baseline_loops_own_logits(verifier):
    """Replayed as the verifier-only loop ran (prefill, then one cached token at a time): in bfloat16, the very
    numbers that chose the baseline's token, so its token leads by a margin >= 0."""
    from specperf.bench.audit import divergence_margin

    half = clone_weights(verifier).to(torch.bfloat16)
    prompt = PROMPTS[2]
    tokens = specperf.decode(half, prompt, max_new_tokens=10).tokens
    for position in range(10):
        for other_token in range(5):
            other = tokens[:position] + [other_token]
            found = divergence_margin(half, prompt, tokens, other, position)
            assert found is not None and found[0] >= 0.0  # the baseline's argmax, in its own numbers


def test_the_vllm_audit_stops_at_the_context_window(verifier):
    """A prompt within k tokens of the window: vLLM schedules no draft position past it, and the audit's
    continuation and replay never index one (on CUDA an out-of-range position is a device assert)."""
    from specperf.bench.audit import audit_vllm_model_draft, verifier_continuation, vllm_walk
    from specperf.engine.forward import context_window

    window, k = context_window(verifier), 4
    draft = clone_weights(verifier)
    prompt = (PROMPTS[2] * 20)[: window - 13]
    tokens = specperf.decode(verifier, prompt, max_new_tokens=12).tokens  # prompt + output = window - 1
    assert len(verifier_continuation(verifier, prompt, tokens, k)) == 2  # positions window - 1 and window
    walk = vllm_walk(draft, verifier, prompt, tokens, k=k)
    assert len(walk.matches) == len(tokens) + 1  # every drafted position, and none past the window
    assert walk.rule.room == window - len(prompt) - 1
    audit = audit_vllm_model_draft(draft, verifier, prompt, tokens, k=k)
    blocks = [walk.rule.block(pos) for pos in range(1, len(tokens))]
    assert blocks[-1] < k and audit.accepted == audit.proposed  # an identical draft accepts every scheduled token
    far = audit_vllm_model_draft(draft, verifier, PROMPTS[0], tokens, k=k)  # far from the window: full blocks
    assert far.proposed % k == 0
