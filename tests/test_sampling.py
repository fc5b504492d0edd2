"""Rejection sampling keeps the verifier's distribution: a chi-square test against the exact distribution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import specperf
from specperf import ModelDrafter, PromptLookupDrafter
from specperf.engine import verify

V = 6
PROMPT = [2, 3, 2, 3, 2]
N_SAMPLES = 2000


def _model(seed: int, n_layer: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=V, n_positions=32, initializer_range=0.15,
                        bos_token_id=0, eos_token_id=V - 1)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def pair() -> tuple[GPT2LMHeadModel, GPT2LMHeadModel]:
    return _model(3, 2), _model(4, 1)


def _next_probs(model: GPT2LMHeadModel, prefix: list[int], temperature: float) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([prefix])).logits[0, -1]
    return torch.softmax(logits / temperature, -1).double().numpy()


def _exact_joint(model: GPT2LMHeadModel, temperature: float) -> np.ndarray:
    """P(x1, x2, x3 | prompt) under the verifier, by enumeration. (V, V, V)"""
    joint = np.zeros((V, V, V))
    p1 = _next_probs(model, PROMPT, temperature)
    for x1, x2 in itertools.product(range(V), repeat=2):
        p2 = _next_probs(model, PROMPT + [x1], temperature)
        p3 = _next_probs(model, PROMPT + [x1, x2], temperature)
        joint[x1, x2] = p1[x1] * p2[x2] * p3
    return joint


def _chi_square(observed: np.ndarray, expected_probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic, with cells expected below 5 pooled into one. Returns (statistic, degrees of freedom)."""
    expected = expected_probs.ravel() * observed.sum()
    observed = observed.ravel().astype(float)
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum() - 1)


def _critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.09 is the 0.999 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _sample_counts(verifier, drafter, temperature: float, n: int) -> np.ndarray:
    counts = np.zeros((V, V, V), dtype=np.int64)
    for seed in range(n):
        tokens = specperf.decode(verifier, PROMPT, drafter=drafter, k=2, max_new_tokens=3,
                                 temperature=temperature, seed=seed).tokens
        counts[tuple(tokens)] += 1
    return counts


@pytest.mark.parametrize("drafter_kind", ["model", "prompt-lookup"])
def test_speculative_sampling_matches_the_verifier(pair, drafter_kind):
    verifier, draft = pair
    drafter = ModelDrafter(draft) if drafter_kind == "model" else PromptLookupDrafter(max_ngram=2)
    temperature = 1.0
    counts = _sample_counts(verifier, drafter, temperature, N_SAMPLES)
    stat, df = _chi_square(counts, _exact_joint(verifier, temperature))
    assert stat < _critical(df), f"chi-square {stat:.1f} over {df} degrees of freedom"


def test_the_chi_square_test_has_power(pair, monkeypatch):
    """A verifier that accepts every draft token samples the draft's distribution; the test must reject it."""
    verifier, draft = pair
    real = verify.verify_sampling

    def accept_all(logits, draft_tokens, draft_probs, temperature, generator):
        return real(logits, draft_tokens, draft_probs * 0 + 1e-9 if draft_probs is not None else None,
                    temperature, generator)

    monkeypatch.setattr("specperf.engine.decode.verify_sampling", accept_all)
    counts = _sample_counts(verifier, ModelDrafter(draft), 1.0, 800)
    stat, df = _chi_square(counts, _exact_joint(verifier, 1.0))
    assert stat > _critical(df)


def test_greedy_verdict_on_hand_built_logits():
    logits = torch.full((4, 10), -5.0)
    for position, token in enumerate([7, 3, 9, 1]):
        logits[position, token] = 5.0  # the verifier's argmax at each position
    verdict = verify.verify_greedy(logits, torch.tensor([7, 3, 4]))
    assert (verdict.n_accepted, verdict.committed, verdict.next_token.tolist()) == (2, [7, 3, 9], [9])
    full = verify.verify_greedy(logits, torch.tensor([7, 3, 9]))
    assert (full.n_accepted, full.committed) == (3, [7, 3, 9, 1])  # the bonus token after a full block
    none = verify.verify_greedy(logits, torch.tensor([0, 3, 9]))
    assert (none.n_accepted, none.committed) == (0, [7])


def test_sampling_verdict_accepts_when_draft_equals_verifier():
    logits = torch.randn(4, 10)
    q = torch.softmax(logits[:3], -1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        draft = torch.multinomial(q, 1, generator=generator).squeeze(-1)
        verdict = verify.verify_sampling(logits, draft, q, 1.0, generator)
        assert verdict.n_accepted == 3  # p(x) / q(x) == 1 is always accepted
