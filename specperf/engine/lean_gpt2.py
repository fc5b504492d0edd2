"""A lean forward for GPT-2 models (gpt2, distilgpt2, gpt2-medium/-large/-xl and the embedded family).

transformers' GPT2LMHeadModel spends most of a single-token forward of a small model outside its matrix products:
building the causal mask, the attention-interface dispatch, per-module ``__call__`` machinery, output dataclasses.
This module runs the same computation straight from the model's own parameters, in the order transformers runs it and
with the same kernels (``addmm`` for Conv1D, ``layer_norm``, the model's own activation,
``scaled_dot_product_attention`` with the same mask rule), so its logits are bitwise equal to ``model(...)``'s:
tests/test_lean_gpt2.py checks this at prefill, single tokens, blocks after a cache and after a rollback.

It reads the parameters at each call, so it follows ``model.to(...)``; it writes keys and values through the engine's
cache (``cache.update``), so rollback and every cache consumer are unchanged. Models that are not plain GPT-2 (see
:func:`supports_lean`: cross attention, hooks or swapped modules, quantizers) keep transformers' forward. Which
forward a model runs is chosen by :class:`specperf.engine.forward.ModelForward`, which holds the lean forward it builds.

:class:`PackedGPT2` (``forward: packed``) is the one exception to "the same kernels": it runs the linear layers as
oneDNN matmuls on prepacked weights, so its logits are close to transformers' but not bitwise equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache


class _Block(NamedTuple):
    """One transformer block's submodules (the model's own, read at each call), its activation and its scaling."""

    ln_1: torch.nn.LayerNorm
    c_attn: torch.nn.Module
    attn_proj: torch.nn.Module
    ln_2: torch.nn.LayerNorm
    c_fc: torch.nn.Module
    mlp_proj: torch.nn.Module
    act: Callable[[torch.Tensor], torch.Tensor]
    scale: float  # transformers' own per-layer scaling (head_dim ** -0.5, over the layer index where configured)


def _conv1d(module: Any, x: torch.Tensor) -> torch.Tensor:
    """transformers' Conv1D: x @ W + b with W stored (in, out). x: (B, n, in) -> (B, n, out)."""
    out = torch.addmm(module.bias, x.view(-1, x.shape[-1]), module.weight)  # (B*n, out)
    return out.view(*x.shape[:-1], out.shape[-1])


def _layer_norm(module: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


class LeanGPT2(torch.nn.Module):
    """Forward of a GPT2LMHeadModel over new tokens with the engine's cache; returns the last logits only.

    A Module (holding no parameters of its own) so that forward hooks can time it as they time the model.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        gpt2: Any = model  # a GPT2LMHeadModel (see supports_lean); its submodules are read by name
        body = gpt2.transformer
        self.config = gpt2.config  # read at each call: an attention implementation set later ends the lean path
        # A tuple, so the model's modules do not become this module's children.
        self._ends: tuple[torch.nn.Embedding, torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.Linear] = (
            body.wte, body.wpe, body.ln_f, gpt2.lm_head)
        self._blocks = tuple(
            _Block(b.ln_1, b.attn.c_attn, b.attn.c_proj, b.ln_2, b.mlp.c_fc, b.mlp.c_proj, b.mlp.act.forward,
                   float(b.attn.scaling))
            for b in body.h
        )
        self._tril: torch.Tensor | None = None  # see _causal
        self._heads = int(self.config.n_head)
        self._head_dim = int(self.config.n_embd) // self._heads

    def _attention(self, x: torch.Tensor, block: _Block, cache: DynamicCache, layer: int,
                   mask: torch.Tensor | None) -> torch.Tensor:
        """Causal self-attention of x (B, n, D) over the cached positions plus its own."""
        q, k, v = self._linear(block.c_attn, x).split(x.shape[-1], dim=2)  # 3 x (B, n, D)
        shape = (*x.shape[:-1], self._heads, self._head_dim)
        q = q.view(shape).transpose(1, 2)  # (B, H, n, hd)
        k, v = cache.update(k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2), layer)  # (B, H, L, hd)
        # transformers' rule: a block over an empty cache is is_causal; a block after a cache gets an explicit mask;
        # a single query attends to everything.
        causal = mask is None and q.shape[2] > 1
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, scale=block.scale,
                                             is_causal=causal)  # (B, H, n, hd)
        out = out.transpose(1, 2).contiguous()  # (B, n, H, hd)
        return self._linear(block.attn_proj, out.reshape(*out.shape[:-2], -1).contiguous())  # (B, n, D)

    def forward(self, input_ids: torch.Tensor, cache: DynamicCache, logits_to_keep: int,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids: (B, n) new tokens after the cache's positions. Returns (B, logits_to_keep, V).

        attention_mask: (B, L) of the L = past + n physical slots, True (or 1) where a slot holds a live token of
        the row; None when every slot is live (then the batch-1 rule: no mask, or a causal block mask). With a
        mask, query i attends to the live slots up to its own, as transformers' sdpa mask has it.
        position_ids: (B, n); None: past + 0..n-1 for every row.
        """
        wte, wpe, ln_f, head = self._ends
        past, n = cache.get_seq_length(), input_ids.shape[1]
        if position_ids is None:
            position_ids = (torch.arange(n, device=input_ids.device) + past).unsqueeze(0)  # (1, n)
        h = F.embedding(input_ids, wte.weight) + F.embedding(position_ids, wpe.weight)  # (B, n, D)
        mask = self._mask(past, n, attention_mask, input_ids.device)  # (B | 1, 1, n, past+n) | None
        for layer, block in enumerate(self._blocks):
            h = self._attention(_layer_norm(block.ln_1, h), block, cache, layer, mask) + h
            ff = self._linear(block.mlp_proj, block.act(self._linear(block.c_fc, _layer_norm(block.ln_2, h))))
            # ff: (B, n, D)
            h = h + ff
        h = _layer_norm(ln_f, h)  # (B, n, D): over every position, then sliced, as transformers does
        return self._head(h[:, -logits_to_keep:] if logits_to_keep else h, head)  # (B, keep, V)

    def _linear(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        """A Conv1D layer of a block: x (B, n, in) -> (B, n, out)."""
        return _conv1d(module, x)

    def _head(self, h: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
        """The output projection: h (B, n, D) -> (B, n, V)."""
        return F.linear(h, head.weight)

    def _mask(self, past: int, n: int, attention_mask: torch.Tensor | None,
              device: torch.device) -> torch.Tensor | None:
        """The boolean attention mask of n queries after ``past`` slots: query i (slot past + i) sees slots
        0..past + i that are live. None where transformers passes none (no padding: a single query, or a block over
        an empty cache, which runs is_causal)."""
        if attention_mask is None and (n == 1 or not past):
            return None
        causal = self._causal(past + n, device)[past : past + n, : past + n]  # (n, L) view
        if attention_mask is None:
            return causal[None, None]  # (1, 1, n, L)
        return causal[None, None] & attention_mask[:, None, None, : past + n].bool()  # (B, 1, n, L)

    def _causal(self, size: int, device: torch.device) -> torch.Tensor:
        """A lower-triangular (C, C) boolean matrix, C >= size, kept and grown by doubling: a block's causal mask
        is a view of it, not built per call."""
        tril = self._tril
        if tril is None or tril.shape[0] < size or tril.device != device:
            capacity = max(size, 256, 2 * tril.shape[0] if tril is not None else 0)
            slots = torch.arange(capacity, device=device)  # (C,)
            tril = slots[None, :] <= slots[:, None]  # (C, C)
            self._tril = tril
        return tril


class _Packed(NamedTuple):
    """One weight prepacked for oneDNN's matmul, and what it was packed from (to see when that changes)."""

    packed: torch.Tensor
    source: torch.Tensor  # the (out, in) weight in torch.nn.Linear's layout: a view of the model's own
    version: int  # source._version when packed: an in-place write to the weight bumps it


# The row count weights are packed for (a hint: a packed weight serves any row count).
_PACK_ROWS = 32
# oneDNN runs a one-row product on another kernel, whose sums differ in the last bits from the same row's in a
# call of two or more; a one-row call therefore runs as two rows (the row twice) and keeps the first.
_MIN_ROWS = 2


# GPT-2's activations that are the tanh approximation of GELU, which transformers' NewGELUActivation composes from
# six elementwise ops; the packed forward runs them as torch's one fused kernel (as vLLM runs its fused gelu_new).
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


class PackedGPT2(LeanGPT2):
    """The lean GPT-2 forward with every linear layer run as oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``)
    on weights prepacked once (``torch.ops.mkldnn._reorder_linear_weight``), as vLLM's CPU backend runs its linear
    layers (``onednn_mm`` on weights prepacked at load).

    For float32 models on the CPU where torch has oneDNN (see :func:`supports_packed`). GPT-2's tanh GELU runs as
    torch's fused kernel. Its logits are not bitwise transformers' (the products sum in another order, the GELU is
    computed in one kernel; tests/test_packed_forward.py bounds the difference), but one row's logits do not depend
    on how many rows a call carries, so a batched row, a verified block and the verifier-only baseline compute the
    same numbers. A weight written in place, or replaced, is packed again at its next use.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self._packs: dict[int, _Packed] = {}
        if self.config.activation_function in _TANH_GELUS:  # one fused kernel for transformers' six elementwise ops
            self._blocks = tuple(block._replace(act=_tanh_gelu) for block in self._blocks)

    def _pack(self, module: Any, weight: torch.Tensor) -> _Packed:
        """``module``'s packed weight, packing it again if the weight changed since. weight: (out, in)."""
        pack = self._packs.get(id(module))
        if pack is None or pack.source.data_ptr() != weight.data_ptr() or pack.version != weight._version:
            with torch.no_grad():
                packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _PACK_ROWS)
            pack = _Packed(packed, weight, weight._version)
            self._packs[id(module)] = pack
        return pack

    def _matmul(self, module: Any, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) @ weight.T + bias through ``module``'s packed weight -> (..., out)."""
        pack = self._pack(module, weight)
        rows = x.reshape(-1, x.shape[-1])  # (R, in), R = B*n
        count = rows.shape[0]
        if count < _MIN_ROWS:
            rows = rows.expand(_MIN_ROWS, -1).contiguous()  # (2, in): the row twice
        out = torch.ops.mkldnn._linear_pointwise(rows, pack.packed, bias, "none", [], "")  # (max(R, 2), out)
        return out[:count].view(*x.shape[:-1], out.shape[-1])  # (..., out)

    def _linear(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        return self._matmul(module, module.weight.t(), module.bias, x)  # Conv1D stores (in, out)

    def _head(self, h: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
        return self._matmul(head, head.weight, None, h)


def supports_packed(model: torch.nn.Module) -> bool:
    """Whether :class:`PackedGPT2` runs ``model``: it supports the lean forward and is a float32 model on the CPU,
    with a torch built with oneDNN."""
    return cpu_float32(model) and torch.backends.mkldnn.is_available() and supports_lean(model)


def cpu_float32(model: torch.nn.Module) -> bool:
    """Whether ``model``'s first parameter is a float32 tensor on the CPU (cheap: checked at each packed call)."""
    first = next(model.parameters())
    return first.device.type == "cpu" and first.dtype == torch.float32


def _plain_modules(model: Any) -> bool:
    """The exact module types transformers' GPT-2 builds, and no hooks on them: anything injected (LoRA, quantized
    layers, a hook that edits activations) changes what transformers computes and the lean forward would not."""
    from transformers.pytorch_utils import Conv1D

    body = model.transformer
    expected = [(body.wte, torch.nn.Embedding), (body.wpe, torch.nn.Embedding), (body.ln_f, torch.nn.LayerNorm),
                (model.lm_head, torch.nn.Linear)]
    for b in body.h:
        expected += [(b.ln_1, torch.nn.LayerNorm), (b.ln_2, torch.nn.LayerNorm), (b.attn.c_attn, Conv1D),
                     (b.attn.c_proj, Conv1D), (b.mlp.c_fc, Conv1D), (b.mlp.c_proj, Conv1D)]
    if any(type(module) is not kind for module, kind in expected):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules() if m is not model)


def supports_lean(model: torch.nn.Module) -> bool:
    """Whether the lean forward computes exactly what transformers' forward of ``model`` does: a plain
    GPT2LMHeadModel with sdpa attention, no cross attention, no device map, quantizer or PEFT adapter, and only the
    module types transformers builds, without hooks. Training mode is checked at each call, not here."""
    from transformers import GPT2LMHeadModel

    config: Any = model.config
    if type(model) is not GPT2LMHeadModel or config.add_cross_attention or config._attn_implementation != "sdpa":
        return False
    if any(getattr(model, name, None) for name in ("hf_device_map", "hf_quantizer", "_hf_peft_config_loaded")):
        return False
    return _plain_modules(model)
