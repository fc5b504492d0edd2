"""A draft model with its own KV cache, rolled back after each rejection."""

from __future__ import annotations

import torch

from specperf.engine.cache import RollbackCache, rollback
from specperf.engine.drafters.base import Drafter, Proposal
from specperf.engine.forward import ModelForward, new_cache, vocab_size
from specperf.engine.sampling import choose
from specperf.engine.transfer import to_device


class ModelDrafter(Drafter):
    """Drafts autoregressively with a small causal LM that shares the verifier's vocabulary.

    Its cache holds the positions it has been fed. A block of k tokens costs k forwards: the first one also feeds
    the committed tokens the draft has not seen yet (the prompt on the first block, the bonus token's predecessor
    after a fully accepted block); the last drafted token is never fed, since it may be rejected.
    """

    name = "model"
    provides_probs = True
    uses_model = True

    def __init__(self, model: torch.nn.Module | ModelForward, label: str | None = None) -> None:
        """``model``: the draft model, or its :class:`ModelForward` (which fixes the forward it runs; a bare module
        runs the lean GPT-2 forward where it supports it, its forward made on first use)."""
        self._forward = model if isinstance(model, ModelForward) else None
        self.model: torch.nn.Module = model.model if isinstance(model, ModelForward) else model
        self.label = label or getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        self._cache: RollbackCache = new_cache()
        self._fed = 0
        self._temperature = 0.0
        self._generator: torch.Generator | None = None
        self._device = torch.device("cpu")

    @property
    def forward(self) -> ModelForward:
        """The forward the draft model runs with."""
        if self._forward is None:  # made on first use, so a drafter built only to be validated costs nothing
            self._forward = ModelForward(self.model)
        return self._forward

    def start(
        self,
        prompt_len: int,
        *,
        device: torch.device,
        temperature: float,
        generator: torch.Generator | None,
    ) -> None:
        self._cache = new_cache()
        self._fed = 0
        self._device = device
        self._temperature = temperature
        self._generator = generator

    def propose(self, seq: list[int], pending: torch.Tensor, k: int) -> Proposal:
        unseen = seq[self._fed : len(seq) - 1]  # the prompt at first; one token after a fully accepted block
        step_input = pending.unsqueeze(0)  # (1, 1)
        if unseen:  # an asynchronous copy, never a blocking one
            step_input = torch.cat([to_device(unseen, self._device), pending]).unsqueeze(0)  # (1, m + 1)
        fed = step_input.shape[1] + k - 1
        tokens: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        forward = self.forward
        for _ in range(k):
            logits = forward(step_input, self._cache, 1)[:, -1]  # (1, V)
            token, q = choose(logits, self._temperature, self._generator)  # (1,), (1, V) | None
            tokens.append(token)
            if q is not None:
                probs.append(q)
            step_input = token.unsqueeze(0)  # (1, 1)
        self._fed = len(seq) + k - 1
        return Proposal(
            tokens=torch.cat(tokens),  # (k,)
            probs=torch.cat(probs) if probs else None,  # (k, V)
            forwards=k,
            fed=fed,
        )

    def rollback(self, n_valid: int) -> None:
        if self._fed > n_valid:
            rollback(self._cache, self._fed - n_valid)
            self._fed = n_valid

    def vocab_size(self) -> int | None:
        return vocab_size(self.model)

    def describe(self) -> str:
        return self.label
