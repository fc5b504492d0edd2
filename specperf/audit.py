"""Token-level audit, outside any timed region: replay a decoded sequence through the draft with teacher forcing.

Two figures, kept apart:
- agreement (the seed's "acceptance rate"): along the generated sequence, the fraction of positions where the
  draft's argmax equals the token the verifier emitted. Its aggregate estimates alpha.
- draft acceptance (vLLM's definition): accepted / proposed draft tokens, recomputed from the same replay by
  walking the engine's block structure. For greedy decoding it must equal the engine's own counters exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specperf.drafters.base import Drafter


@dataclass
class Audit:
    """What the replay of one request found."""

    matches: list[bool]  # matches[i]: draft argmax == emitted token i (i >= 1; token 0 comes from the prefill)
    proposed: int
    accepted: int
    accept_counts: list[int]

    @property
    def agreement(self) -> float | None:
        return sum(self.matches) / len(self.matches) if self.matches else None

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.proposed if self.proposed else None


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


def replay_blocks(matches: list[bool], k: int, max_new_tokens: int) -> tuple[int, int, list[int]]:
    """Walk the engine's greedy block structure over ``matches``; return (proposed, accepted, accept_counts).

    A step at emitted position ``pos`` drafts k' = min(k, max_new_tokens - pos - 1) tokens, accepts the leading ones
    the draft got right (never past the end of the sequence), and emits them plus the verifier's token.
    """
    n_tokens = len(matches) + 1
    proposed = accepted = 0
    counts = [0] * (k + 1)
    pos = 1
    while pos < n_tokens:
        block = min(k, max_new_tokens - pos - 1)
        n = 0
        while n < block and pos + n < n_tokens and matches[pos - 1 + n]:
            n += 1
        if block:
            proposed, accepted = proposed + block, accepted + n
            counts[n] += 1
        pos += n + 1
    return proposed, accepted, counts


def audit_model_draft(draft: torch.nn.Module, prompt_ids: list[int], tokens: list[int], *, k: int,
                      max_new_tokens: int) -> Audit:
    """Agreement and recomputed greedy acceptance of a draft model along a decoded sequence."""
    matches = draft_matches(draft, prompt_ids, tokens)
    proposed, accepted, counts = replay_blocks(matches, k, max_new_tokens)
    return Audit(matches, proposed, accepted, counts)


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
    pos = 1
    while pos < len(tokens):
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
    return Audit(matches, proposed, accepted, counts)


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
