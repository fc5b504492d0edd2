"""Verification of a drafted block against the verifier's logits: the acceptance rules."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from specperf.engine.sampling import sample, to_probs


@dataclass
class Verdict:
    """Outcome of one verification step.

    n_accepted: leading draft tokens accepted. committed: those tokens plus the verifier's own next token
    (the correction, or the bonus token after a fully accepted block). next_token: (1,) device tensor of that
    last token, which becomes the pending token.
    """

    n_accepted: int
    committed: list[int]
    next_token: torch.Tensor


def verify_greedy(logits: torch.Tensor, draft: torch.Tensor) -> Verdict:
    """Greedy rule. logits: (k'+1, V) verifier logits at [pending, d_1..d_k']; draft: (k',).

    p_i = argmax of the verifier at position i. Accept the longest prefix with d_{i+1} == p_i, then append p_n.
    """
    k = draft.shape[0]
    target = logits.argmax(dim=-1)  # (k'+1,)
    host = torch.cat([draft, target]).tolist()  # the step's one host sync
    drafted, predicted = host[:k], host[k:]
    n = 0
    while n < k and drafted[n] == predicted[n]:
        n += 1
    return Verdict(n, drafted[:n] + [predicted[n]], target[n : n + 1])


def _one_hot(draft: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(draft, vocab).float()  # (k', V)


def verify_sampling(
    logits: torch.Tensor,
    draft: torch.Tensor,
    draft_probs: torch.Tensor | None,
    temperature: float,
    generator: torch.Generator | None,
) -> Verdict:
    """Rejection sampling (Leviathan et al. 2023; Chen et al. 2023); the output follows the verifier's distribution.

    logits: (k'+1, V) verifier logits; draft: (k',) drafted tokens x_i; draft_probs: (k', V) draft distribution q,
    or None for a drafter without one (then q is one-hot on x_i). p = softmax(logits / T) is the verifier's.
    """
    k = draft.shape[0]
    p = to_probs(logits, temperature)  # (k'+1, V)
    q = draft_probs if draft_probs is not None else _one_hot(draft, p.shape[-1])  # (k', V)
    rows = torch.arange(k, device=p.device)
    p_x = p[rows, draft]  # (k',) p_i(x_i)
    q_x = q[rows, draft]  # (k',) q_i(x_i) > 0, since x_i was drawn from q_i
    # Accept x_i with probability min(1, p(x)/q(x)): u < p/q  <=>  u * q < p.
    u = torch.rand(k, device=p.device, generator=generator)  # (k',)
    accept = u * q_x < p_x  # (k',)
    # On a rejection at i, resample from norm(max(0, p_i - q_i)); after a full block, the bonus comes from p_k'.
    residual = (p[:k] - q).clamp_min(0.0)  # (k', V)
    mass = residual.sum(dim=-1, keepdim=True)  # (k', 1)
    # Zero residual mass means p == q at that position, where a rejection has probability 0: any row will do.
    residual = torch.where(mass > 0, residual / mass.clamp_min(1e-30), p[:k])
    fallback = sample(torch.cat([residual, p[k:]]), generator)  # (k'+1,) one candidate per stopping point
    host = torch.cat([draft, accept.long(), fallback]).tolist()  # the step's one host sync
    drafted, accepted, candidates = host[:k], host[k : 2 * k], host[2 * k :]
    n = 0
    while n < k and accepted[n]:
        n += 1
    return Verdict(n, drafted[:n] + [candidates[n]], fallback[n : n + 1])
