"""One forward pass of a causal LM over new tokens, with the engine's cache."""

from __future__ import annotations

import functools
import inspect

import torch

from specperf.engine.cache import RollbackCache
from specperf.engine.lean_gpt2 import lean_forward


@functools.cache
def _cache_keyword(model_class: type) -> str:
    # transformers 5 renamed `past_key_values` to `cache`; some model classes may still only take the old name.
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache() -> RollbackCache:
    """A fresh, empty cache for one request."""
    return RollbackCache()


def forward(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    cache: RollbackCache,
    logits_to_keep: int,
) -> torch.Tensor:
    """Run ``model`` on ``input_ids`` (B, n) appended to ``cache``; return the last ``logits_to_keep`` logits.

    Keeping only the logits that are used skips the vocabulary projection of every prompt position at prefill.
    GPT-2 models run the lean forward (bitwise the same logits, a fraction of transformers' per-call overhead).
    Returns (B, logits_to_keep, V).
    """
    lean = lean_forward(model)
    if lean is not None:
        return lean(input_ids, cache, logits_to_keep)  # (B, logits_to_keep, V)
    kwargs = {_cache_keyword(type(model)): cache}  # type: ignore[arg-type]  # classes hash by identity
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=logits_to_keep, **kwargs)
    return out.logits  # (B, logits_to_keep, V)


def vocab_size(model: torch.nn.Module) -> int:
    """Number of logits the model produces per position (the size of its output embedding)."""
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)  # type: ignore[arg-type]  # a PretrainedConfig int


def context_window(model: torch.nn.Module) -> int | None:
    """The model's maximum number of positions, or None when the config does not bound it."""
    config = model.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter."""
    return next(model.parameters()).device
