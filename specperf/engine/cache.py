"""KV cache that the engine owns and rolls back.

transformers' DynamicLayer grows by ``torch.cat`` on every forward, which copies the whole cache per decoded token:
per-token work that grows with the sequence. ``RollbackCache`` keeps each layer in a buffer with spare capacity
(doubling when full), writes new keys in place and hands attention a view. Rolling back after a rejected draft block
is a length change, not a copy. It subclasses DynamicCache, so every model that accepts a DynamicCache accepts it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

_MIN_CAPACITY = 256  # tokens; enough for most prompts so the first regrowth is rare


class GrowableLayer(DynamicLayer):
    """One layer's keys and values in a preallocated (B, H, capacity, D) buffer; ``keys`` is a view of the live part."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k_buf: torch.Tensor | None = None
        self._v_buf: torch.Tensor | None = None
        self._len = 0

    def _reserve(self, needed: int, like_k: torch.Tensor, like_v: torch.Tensor) -> None:
        capacity = 0 if self._k_buf is None else self._k_buf.shape[-2]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity, _MIN_CAPACITY)
        k_buf = like_k.new_empty((*like_k.shape[:-2], new_capacity, like_k.shape[-1]))  # (B, H, cap, D)
        v_buf = like_v.new_empty((*like_v.shape[:-2], new_capacity, like_v.shape[-1]))  # (B, H, cap, Dv)
        if self._len:
            k_buf[..., : self._len, :].copy_(self._k_buf[..., : self._len, :])
            v_buf[..., : self._len, :].copy_(self._v_buf[..., : self._len, :])
        self._k_buf, self._v_buf = k_buf, v_buf

    def _publish(self) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self._k_buf[..., : self._len, :]  # (B, H, len, D) view
        values = self._v_buf[..., : self._len, :]
        self.keys, self.values = keys, values
        return keys, values

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._len + key_states.shape[-2]
        self._reserve(end, key_states, value_states)
        self._k_buf[..., self._len : end, :].copy_(key_states)
        self._v_buf[..., self._len : end, :].copy_(value_states)
        self._len = end
        return self._publish()

    def get_seq_length(self) -> int:
        return self._len if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        # Same contract as DynamicLayer.crop in transformers 5: a negative count of tokens to drop.
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of tokens to remove, got {tokens_to_remove}")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self._len = max(0, self._len + tokens_to_remove)
        self._publish()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        self._k_buf = self._k_buf[indices].contiguous()
        self._v_buf = self._v_buf[indices].contiguous()
        self._publish()

    def gather_slots(self, index: torch.Tensor) -> None:
        """Row b keeps slots ``index[b]`` (B, n), in that order, as its first n slots; the rest are dropped."""
        if not self.is_initialized:
            return
        batch, heads, _, _ = self._k_buf.shape
        n = index.shape[1]
        k_idx = index[:, None, :, None].expand(batch, heads, n, self._k_buf.shape[-1])  # (B, H, n, D)
        v_idx = index[:, None, :, None].expand(batch, heads, n, self._v_buf.shape[-1])  # (B, H, n, Dv)
        keys = self._k_buf[..., : self._len, :].gather(2, k_idx)  # (B, H, n, D)
        values = self._v_buf[..., : self._len, :].gather(2, v_idx)
        self._k_buf[..., :n, :].copy_(keys)
        self._v_buf[..., :n, :].copy_(values)
        self._len = n
        self._publish()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if not self.is_initialized:
            return
        self._k_buf = self._k_buf.repeat_interleave(repeats, dim=0)
        self._v_buf = self._v_buf.repeat_interleave(repeats, dim=0)
        self._publish()

    def reset(self) -> None:
        self._k_buf = self._v_buf = None
        self._len = 0
        super().reset()


class RollbackCache(DynamicCache):
    """A DynamicCache whose layers are GrowableLayer: in-place appends, O(1) rollback."""

    def __init__(self) -> None:
        super().__init__()
        self.layer_class_to_replicate = GrowableLayer

    def gather_slots(self, index: torch.Tensor) -> None:
        """Compact every layer: row b keeps its slots ``index[b]`` (B, n) as slots 0..n-1."""
        for layer in self.layers:
            assert isinstance(layer, GrowableLayer)  # the only layer class this cache makes
            layer.gather_slots(index)


def rollback(cache: DynamicCache, n_tokens: int) -> None:
    """Drop the last ``n_tokens`` positions from ``cache``: the one place the engine rewinds a cache."""
    if n_tokens < 0:
        raise ValueError(f"rollback takes a non-negative token count, got {n_tokens}")
    if n_tokens:
        cache.crop(-n_tokens)
