"""Rejection sampling keeps the verifier's distribution: a chi-square test against the exact distribution."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

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


def random_gpt2(seed: int, n_layer: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=V, n_positions=32, initializer_range=0.15,
                        bos_token_id=0, eos_token_id=V - 1)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def pair() -> tuple[GPT2LMHeadModel, GPT2LMHeadModel]:
    return random_gpt2(3, 2), random_gpt2(4, 1)


def _next_probs(model: GPT2LMHeadModel, prefix: list[int], temperature: float) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([prefix])).logits[0, -1]
    return torch.softmax(logits / temperature, -1).double().numpy()


def exact_joint(model: GPT2LMHeadModel, temperature: float) -> np.ndarray:
    """P(x1, x2, x3 | prompt) under the verifier, by enumeration. (V, V, V)"""
    joint = np.zeros((V, V, V))
    p1 = _next_probs(model, PROMPT, temperature)
    for x1, x2 in itertools.product(range(V), repeat=2):
        p2 = _next_probs(model, PROMPT + [x1], temperature)
        p3 = _next_probs(model, PROMPT + [x1, x2], temperature)
        joint[x1, x2] = p1[x1] * p2[x2] * p3
    return joint


def chi_square(observed: np.ndarray, expected_probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic, with cells expected below 5 pooled into one. Returns (statistic, degrees of freedom)."""
    expected = expected_probs.ravel() * observed.sum()
    observed = observed.ravel().astype(float)
    small = expected < 5
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()), int(keep.sum() - 1)


def chi_square_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile; z = 3.09 is the 0.999 normal quantile."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _sample_counts(verifier, drafter, temperature: float, n: int) -> np.ndarray:
    counts = np.zeros((V, V, V), dtype=np.int64)
    for seed in range(n):
        tokens = specperf.decode(verifier, PROMPT, drafter=drafter, k=2, max_new_tokens=3,
                                 temperature=temperature, seed=seed).tokens
        counts[tuple(tokens)] += 1
    return counts


@pytest.mark.slow  # 2,000 sampled decodes per drafter
@pytest.mark.parametrize("drafter_kind", ["model", "prompt-lookup"])
def test_speculative_sampling_matches_the_verifier(pair, drafter_kind):
    verifier, draft = pair
    drafter = ModelDrafter(draft) if drafter_kind == "model" else PromptLookupDrafter(max_ngram=2)
    temperature = 1.0
    counts = _sample_counts(verifier, drafter, temperature, N_SAMPLES)
    stat, df = chi_square(counts, exact_joint(verifier, temperature))
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} over {df} degrees of freedom"


@pytest.mark.slow  # 800 sampled decodes
def test_the_chi_square_test_has_power(pair, monkeypatch):
    """A verifier that accepts every draft token samples the draft's distribution; the test must reject it."""
    verifier, draft = pair
    real = verify.verify_sampling

    def accept_all(logits, draft_tokens, draft_probs, temperature, generator):
        return real(logits, draft_tokens, draft_probs * 0 + 1e-9 if draft_probs is not None else None,
                    temperature, generator)

    monkeypatch.setattr("specperf.engine.decode.verify_sampling", accept_all)
    counts = _sample_counts(verifier, ModelDrafter(draft), 1.0, 800)
    stat, df = chi_square(counts, exact_joint(verifier, 1.0))
    assert stat > chi_square_critical(df)


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


# --------------------------------------------------------------------------- the embedded family, two samples

EMBEDDED_SAMPLES = 1200  # per side; batch decoding keeps this affordable on a 2-core CPU
EMBEDDED_BATCH = 60
EMBEDDED_TOKENS = 4
EMBEDDED_PROMPT = 8  # prompt tokens: each sample prefills it, so it sets most of the cost


def _homogeneity(a: Counter[Any], b: Counter[Any]) -> tuple[float, int]:
    """Pearson's two-sample chi-square statistic over the union of categories (equal sample sizes), categories
    expected below 5 per sample pooled into one. Returns (statistic, degrees of freedom)."""
    pooled: Counter[Any] = Counter()
    cells = []
    for key in set(a) | set(b):
        if (a[key] + b[key]) / 2 < 5:
            pooled["a"] += a[key]
            pooled["b"] += b[key]
        else:
            cells.append((a[key], b[key]))
    if pooled["a"] + pooled["b"]:
        cells.append((pooled["a"], pooled["b"]))
    stat = sum((x - (x + y) / 2) ** 2 / ((x + y) / 2) * 2 for x, y in cells)
    return stat, len(cells) - 1


def _embedded_samples(verifier, prompt: list[int], drafter, seed0: int) -> list[list[int]]:
    samples: list[list[int]] = []
    for i in range(EMBEDDED_SAMPLES // EMBEDDED_BATCH):
        rows = specperf.decode_batch(verifier, [prompt] * EMBEDDED_BATCH, drafter=drafter, k=2,
                                     max_new_tokens=EMBEDDED_TOKENS, temperature=1.0, seed=seed0 + i)
        samples += [r.tokens for r in rows]
    return samples


@pytest.fixture(scope="module")
def embedded_setup():
    """The embedded verifier, draft-small, the question's start as a prompt, and the verifier-only sample."""
    from specperf.bench.models import load_model
    from specperf.data import apply_slice, fit_prompts, load_records

    verifier = load_model("embedded:verifier", device="cpu")
    draft = load_model("embedded:draft-small", device="cpu")
    records = apply_slice(load_records("embedded"), "0:1")
    fitted = fit_prompts(records, verifier.tokenizer, max_context=512, max_new_tokens=EMBEDDED_TOKENS)
    prompt = fitted.prompt_ids[0][:EMBEDDED_PROMPT]  # the question's start: a full abstract only costs prefill time
    return verifier.model, draft.model, prompt, _embedded_samples(verifier.model, prompt, None, seed0=0)


def _differences(plain: list[list[int]], spec: list[list[int]]) -> list[str]:
    """The statistics that reject equal distributions: per position, and tokens 2-3 jointly."""
    found = []
    tests = [(f"token {i}", lambda s, i=i: s[i]) for i in range(EMBEDDED_TOKENS)]
    tests.append(("tokens 2-3", lambda s: (s[1], s[2])))
    for name, key in tests:
        stat, df = _homogeneity(Counter(map(key, plain)), Counter(map(key, spec)))
        if df > 0 and stat >= chi_square_critical(df):
            found.append(f"{name}: chi-square {stat:.1f} over {df} df")
    return found


@pytest.mark.slow  # 2 x 1,200 sampled decodes of the embedded family
def test_embedded_speculative_sampling_is_the_verifiers_distribution(embedded_setup):
    """Verifier-only and speculative sampling (draft-small, k=2, T=1, batch decoding) give the same distribution of
    the first four tokens, per position and jointly for tokens 2-3. Disjoint seeds: shared ones would couple the two
    samples and make the test meaningless."""
    verifier, draft, prompt, plain = embedded_setup
    spec = _embedded_samples(verifier, prompt, ModelDrafter(draft), seed0=100_000)
    assert not _differences(plain, spec)


@pytest.mark.slow  # 2 x 1,200 sampled decodes of the embedded family
def test_the_embedded_two_sample_test_has_power(embedded_setup, monkeypatch):
    """Accepting every draft token samples draft-small's distribution; the same test must reject it."""
    from specperf.engine import batch as batch_module

    verifier, draft, prompt, plain = embedded_setup
    real = batch_module.rejection_sample

    def accept_all(logits, proposal, temperature, generator, in_block):
        return in_block, real(logits, proposal, temperature, generator, in_block)[1]

    monkeypatch.setattr(batch_module, "rejection_sample", accept_all)
    assert _differences(plain, _embedded_samples(verifier, prompt, ModelDrafter(draft), seed0=100_000))
