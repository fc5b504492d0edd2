"""Token choice from logits: greedy argmax or temperature sampling, with an explicit generator."""

from __future__ import annotations

import torch


def to_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of ``logits / temperature`` in float32, whatever the model's dtype. (..., V) -> (..., V)."""
    return torch.softmax(logits.float() / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs`` (N, V) -> (N,) token ids. No host sync."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def choose(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next token per row of ``logits`` (N, V): argmax when temperature == 0, else a sample.

    Returns (tokens (N,), probs (N, V) or None for greedy).
    """
    if temperature == 0.0:
        return logits.argmax(dim=-1), None
    probs = to_probs(logits, temperature)
    return sample(probs, generator), probs


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A generator on ``device``: seeded when ``seed`` is given, else from fresh entropy."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
