"""Token-level audit, outside any timed region: replay a decoded sequence through the draft with teacher forcing.

Two figures, kept apart:
- agreement (the seed's "acceptance rate"): along the generated sequence, the fraction of positions where the
  draft's argmax equals the token the verifier emitted. Its aggregate estimates alpha.
- draft acceptance (vLLM's definition): accepted / proposed draft tokens, recomputed from the same replay by
  walking the engine's block structure. For greedy decoding it must equal the engine's own counters exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from specperf.bench.runner import CaseRunner
from specperf.config.cases import Case
from specperf.engine.drafters.base import Drafter
from specperf.engine.forward import forward, model_device, new_cache
from specperf.errors import SpecperfError
from specperf.records import Audit, DecodeResult


class AuditMismatch(SpecperfError):
    """The audit's recomputed greedy acceptance differs from the engine's own counters."""


@torch.inference_mode()
def draft_matches(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int]) -> list[bool]:
    """One teacher-forced forward of ``draft`` over prompt + tokens[:-1]; compare its argmax with tokens[1:].

    Token 0 follows the prompt and is the verifier's prefill token, which the engine never drafts.
    """
    if len(tokens) < 2:
        return []
    device = next(draft.parameters()).device
    ids = torch.tensor([prompt_ids + tokens[:-1]], device=device)  # (1, T + n - 1)
    logits = draft(input_ids=ids).logits[0, len(prompt_ids):]  # (n - 1, V): predicts tokens[1:]
    predicted = logits.argmax(dim=-1).tolist()
    return [p == t for p, t in zip(predicted, tokens[1:])]


def _greedy_steps(matches: list[bool], k: int, max_new_tokens: int) -> Iterator[tuple[int, int]]:
    """The engine's greedy block structure over ``matches``: (drafted, accepted) for each step after the prefill.

    A step at emitted position ``pos`` drafts k' = min(k, max_new_tokens - pos - 1) tokens, accepts the leading ones
    the draft got right (never past the end of the sequence), and emits them plus the verifier's token.
    """
    n_tokens, pos = len(matches) + 1, 1
    while pos < n_tokens:
        block = min(k, max_new_tokens - pos - 1)
        n = 0
        while n < block and pos + n < n_tokens and matches[pos - 1 + n]:
            n += 1
        yield block, n
        pos += n + 1


def replay_blocks(matches: list[bool], k: int, max_new_tokens: int) -> tuple[int, int, list[int]]:
    """Walk the engine's greedy block structure over ``matches``; return (proposed, accepted, accept_counts)."""
    proposed = accepted = 0
    counts = [0] * (k + 1)
    for block, n in _greedy_steps(matches, k, max_new_tokens):
        if block:
            proposed, accepted = proposed + block, accepted + n
            counts[n] += 1
    return proposed, accepted, counts


def block_calls(matches: list[bool], k: int, max_new_tokens: int) -> int:
    """Verifier calls (the prefill included) specperf's greedy loop makes to emit len(matches) + 1 tokens at block
    size k, the draft's teacher-forced ``matches`` being known."""
    return 1 + sum(1 for _ in _greedy_steps(matches, k, max_new_tokens))


def replay_full_blocks(matches: list[bool], k: int, n_tokens: int) -> tuple[int, int, list[int]]:
    """vLLM's block structure: every step drafts k tokens, even past max_tokens, and counts the leading ones the
    draft got right; ``matches`` must reach k - 1 positions past the output (the verifier's continuation)."""
    proposed = accepted = 0
    counts = [0] * (k + 1)
    pos = 1
    while pos < n_tokens:
        n = 0
        while n < k and matches[pos - 1 + n]:
            n += 1
        proposed, accepted = proposed + k, accepted + n
        counts[n] += 1
        pos += n + 1
    return proposed, accepted, counts


@torch.inference_mode()
def verifier_continuation(verifier: torch.nn.Module, prompt_ids: list[int], tokens: list[int], n: int) -> list[int]:
    """The verifier's next ``n`` greedy tokens after prompt + tokens (KV-cached): what a verify step saw beyond
    the end of the output."""
    cache = new_cache()
    ids = torch.tensor([prompt_ids + tokens], device=model_device(verifier))  # (1, T + len(tokens))
    logits, extra = forward(verifier, ids, cache, 1), []  # (1, 1, V)
    for step in range(n):
        token = logits[0, -1].argmax()  # ()
        extra.append(int(token))
        if step + 1 < n:
            logits = forward(verifier, token.view(1, 1), cache, 1)  # (1, 1, V)
    return extra


def audit_vllm_model_draft(draft: torch.nn.Module, verifier: torch.nn.Module, prompt_ids: list[int],
                           tokens: list[int], *, k: int) -> Audit:
    """Agreement along the output, and acceptance recomputed as vLLM counts it (full blocks to the last step)."""
    tail = verifier_continuation(verifier, prompt_ids, tokens, k) if tokens else []
    matches = draft_matches(draft, prompt_ids, tokens + tail)
    proposed, accepted, counts = replay_full_blocks(matches, k, len(tokens))
    return Audit(matches[: max(0, len(tokens) - 1)], proposed, accepted, counts)


def audit_model_draft(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int], *, k: int,
                      max_new_tokens: int) -> Audit:
    """Agreement and recomputed greedy acceptance of a draft model along a decoded sequence."""
    matches = draft_matches(draft, prompt_ids, tokens)
    proposed, accepted, counts = replay_blocks(matches, k, max_new_tokens)
    return Audit(matches, proposed, accepted, counts, calls=block_calls(matches, k, max_new_tokens) if tokens else 0)


def audit_drafter(drafter: Drafter, prompt_ids: list[int], tokens: list[int], *, k: int,
                  max_new_tokens: int) -> Audit:
    """Replay any drafter step by step along the sequence (for drafters without a model, e.g. prompt lookup).

    Agreement here is per proposed position: did the drafter's token at that position match the emitted one.
    """
    device = torch.device("cpu")
    drafter.start(len(prompt_ids), device=device, temperature=0.0, generator=None)
    seq = list(prompt_ids) + tokens[:1]
    proposed = accepted = 0
    counts = [0] * (k + 1)
    matches: list[bool] = []
    pos, calls = 1, 1
    while pos < len(tokens):
        calls += 1
        block = min(k, max_new_tokens - pos - 1)
        drafted = drafter.propose(seq, torch.tensor(seq[-1:]), block).tokens.tolist() if block else []
        n = 0
        while n < len(drafted) and pos + n < len(tokens) and drafted[n] == tokens[pos + n]:
            n += 1
        matches.extend(d == t for d, t in zip(drafted[: n + 1], tokens[pos:]))
        if drafted:
            proposed, accepted = proposed + len(drafted), accepted + n
            counts[n] += 1
        drafter.rollback(len(seq) + n)
        seq.extend(tokens[pos : pos + n + 1])
        pos += n + 1
    return Audit(matches, proposed, accepted, counts, calls=calls if tokens else 0)


@torch.inference_mode()
def divergence_margin(verifier: torch.nn.Module, prompt_ids: list[int], reference: list[int], other: list[int],
                      position: int) -> float | None:
    """How close the verifier was to a tie where two greedy outputs part: logit(reference's token) minus
    logit(other's token), at ``position``, on the reference's prefix. None when one output ended there (EOS).

    In float16/bfloat16 a verify forward over k+1 tokens and a one-token forward round differently; where the top
    two logits are this close, either token is the verifier's greedy choice.
    """
    if position >= len(reference) or position >= len(other):
        return None
    device = next(verifier.parameters()).device
    ids = torch.tensor([prompt_ids + reference[:position]], device=device)  # (1, T + position)
    logits = verifier(input_ids=ids, logits_to_keep=1).logits[0, -1].float()  # (V,)
    return float(logits[reference[position]] - logits[other[position]])


def audit_case(runner: CaseRunner, case: Case, results: list[DecodeResult], *, prompts: list[list[int]] | None = None,
               k: int | None = None, check: bool = True) -> list[Audit]:
    """Replay each request's tokens through the case's draft, teacher-forced; check greedy counters exactly.

    ``prompts`` default to the case's slice and ``k`` to the case's; ``check=False`` replays tokens that the
    engine did not produce (the acceptance slice's verifier-only output), whose counters there are none to check.
    """
    assert case.draft is not None
    store, gen = runner.store, runner.store.config.generation
    prompts = store.prompts(case.slice).ids if prompts is None else prompts
    k = case.k if k is None else k
    audits = []
    vllm_model = case.draft.engine == "vllm" and case.draft.drafter == "model"
    for prompt, result in zip(prompts, results):
        if vllm_model:
            assert case.draft.model is not None
            audit = audit_vllm_model_draft(store.model(case.draft.model).model, store.verifier.model, prompt,
                                           result.tokens, k=k)
        elif case.draft.drafter == "prompt-lookup" or runner.interventions.replays_drafter:
            audit = audit_drafter(runner.new_drafter(case.draft), prompt, result.tokens, k=k,
                                  max_new_tokens=gen.max_new_tokens)
        else:
            assert case.draft.model is not None
            audit = audit_model_draft(store.model(case.draft.model).model, prompt, result.tokens, k=k,
                                      max_new_tokens=gen.max_new_tokens)
        audits.append(audit)
    # Greedy counters are fully determined by the tokens: specperf's own, and vLLM's draft models (its n-gram
    # lookup matches differently from specperf's, so its audit is a comparison, not a check).
    if check and gen.temperature == 0.0 and (case.draft.engine == "specperf" or vllm_model):
        check_counters(case, results, audits)
    return audits


def check_counters(case: Case, results: list[DecodeResult], audits: list[Audit]) -> None:
    """The engine's accepted/proposed counts equal the audit's recomputation, request by request."""
    for i, (result, audit) in enumerate(zip(results, audits)):
        if (result.proposed, result.accepted) != (audit.proposed, audit.accepted):
            raise AuditMismatch(
                f"{case.id}, request {i}: the engine counted {result.accepted}/{result.proposed} accepted/proposed "
                f"draft tokens, the audit recomputed {audit.accepted}/{audit.proposed}"
            )


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (or the shorter one's end); None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def divergences(runner: CaseRunner, case: Case, baseline: list[DecodeResult],
                results: list[DecodeResult]) -> tuple[list[int | None], list[float | None]]:
    """Per request: where the case's tokens first part from the baseline's, and the verifier's logit margin there."""
    prompts, verifier = runner.store.prompts(case.slice).ids, runner.store.verifier.model
    positions, margins = [], []
    for prompt, base, result in zip(prompts, baseline, results):
        position = first_divergence(base.tokens, result.tokens)
        positions.append(position)
        margins.append(None if position is None else divergence_margin(verifier, prompt, base.tokens,
                                                                       result.tokens, position))
    return positions, margins
