"""One forward pass of a causal LM over new tokens, with the engine's cache, through the forward chosen for it.

:class:`ModelForward` is what the engine runs: a model and its forward (the suite's ``forward:`` key), the lean GPT-2
forward built once when it is made. The decoding loops, the draft model, the probes and the audit take one; their
public entry points also take a bare module, which runs the lean forward where the model supports it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from specperf.config.schema import FORWARDS
from specperf.engine.cache import RollbackCache
from specperf.engine.lean_gpt2 import LeanGPT2, PackedGPT2, cpu_float32, supports_lean, supports_packed


@functools.cache
def cache_keyword(model_class: type) -> str:
    """The keyword ``model_class.forward`` takes its cache by."""
    # transformers 5 renamed `past_key_values` to `cache`; some model classes may still only take the old name.
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache() -> RollbackCache:
    """A fresh, empty cache for one request."""
    return RollbackCache()


class ModelForward:
    """A causal LM and the forward the engine runs it with: ``"lean"``, the lean GPT-2 forward where the model
    supports it (bitwise the same logits, a fraction of transformers' per-call overhead), else transformers';
    ``"packed"``, the lean forward with its linear layers as oneDNN matmuls on prepacked weights where the model is
    a float32 GPT-2 on the CPU (not bitwise transformers', see :class:`~specperf.engine.lean_gpt2.PackedGPT2`), else as
    ``"lean"``; or ``"transformers"``, always transformers' own.

    The model is checked, and its lean forward built, once, here: hooks or swapped modules inside it keep transformers'
    forward if present now. Hooks registered on the model itself do not run with the lean forward; register them on
    :attr:`lean`, a Module, as the time breakdown does.
    """

    def __init__(self, model: torch.nn.Module, path: str = "lean") -> None:
        if path not in FORWARDS:
            raise ValueError(f"forward must be one of {', '.join(map(repr, FORWARDS))}, got {path!r}")
        self.model = model
        self.path = path
        self._built = _build(model, path)

    @property
    def lean(self) -> LeanGPT2 | None:
        """The lean forward a call runs now; None where transformers' forward runs: chosen, not a plain GPT-2, the
        model in training mode, or its attention implementation no longer sdpa."""
        lean = self._built
        if lean is None or self.model.training or lean.config._attn_implementation != "sdpa":
            return None
        if isinstance(lean, PackedGPT2) and not cpu_float32(self.model):
            return None  # moved off the CPU or out of float32 since: transformers' forward, as for any change
        return lean

    def __call__(self, input_ids: torch.Tensor, cache: RollbackCache, logits_to_keep: int,
                 attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Run the model on ``input_ids`` (B, n) appended to ``cache``; return the last ``logits_to_keep`` logits.

        Keeping only the logits that are used skips the vocabulary projection of every prompt position at prefill.
        A batch with padded or dead slots passes ``attention_mask`` (B, past + n), True on live slots, and
        ``position_ids`` (B, n); None for either means every slot live and positions past + 0..n-1.
        Returns (B, logits_to_keep, V).
        """
        lean = self.lean
        if lean is not None:
            return lean(input_ids, cache, logits_to_keep, attention_mask, position_ids)  # (B, logits_to_keep, V)
        kwargs: dict[str, Any] = {cache_keyword(type(self.model)): cache}  # type: ignore[arg-type]  # by identity
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        out = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=logits_to_keep, **kwargs)
        return out.logits  # (B, logits_to_keep, V)


def _build(model: torch.nn.Module, path: str) -> LeanGPT2 | None:
    """The specperf forward ``path`` builds for ``model``; None where transformers' forward runs."""
    if path == "packed" and supports_packed(model):
        return PackedGPT2(model)
    if path in ("lean", "packed") and supports_lean(model):
        return LeanGPT2(model)
    return None


def as_forward(model: torch.nn.Module | ModelForward) -> ModelForward:
    """``model`` if it is a :class:`ModelForward`; a bare module with the lean forward where it supports it (checked
    and built at each call of this function: pass a ModelForward to do that once)."""
    return model if isinstance(model, ModelForward) else ModelForward(model)


def forward(
    model: torch.nn.Module | ModelForward,
    input_ids: torch.Tensor,
    cache: RollbackCache,
    logits_to_keep: int,
) -> torch.Tensor:
    """One forward of ``model`` (see :meth:`ModelForward.__call__`): input_ids (B, n); returns (B, logits_to_keep, V).

    A bare module gets its forward from :func:`as_forward` at each call.
    """
    return as_forward(model)(input_ids, cache, logits_to_keep)


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
