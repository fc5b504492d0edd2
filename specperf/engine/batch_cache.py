"""The cache state of a batch (see :mod:`specperf.engine.batch`): one physical cache per model, a (B, L) mask of
live slots and each row's next position on the device, and a host mirror of the per-row counts.

The device tensors are updated by device operations from device values (the accepted counts of a step, the
drafted lengths), so no step copies a Python list to the device; the host mirror (live slots, last live slot) is
updated from the same figures once the step's one sync has brought them to the host, and decides the shapes:
where to roll back, when to compact, whether any slot is masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from specperf.engine.cache import RollbackCache, rollback
from specperf.engine.forward import ModelForward, new_cache
from specperf.engine.transfer import to_device

PAD = 0  # token id fed in masked slots; never attended to, so any id in the vocabulary will do
COMPACT_MIN_SLOTS = 32  # dead slots tolerated whatever the length; beyond it, see BatchState.compact_if_needed
COMPACT_FRACTION = 0.25  # ... and at most this share of the longest row's live slots


@dataclass(frozen=True)
class Slots:
    """A (B, w) block's live slots: ``valid`` on the device, and per row on the host how many are live and the
    offset of the last live one (-1: none)."""

    valid: torch.Tensor | None  # (B, w) bool; None: every slot live
    live: list[int]
    last: list[int]

    @classmethod
    def full(cls, batch: int, width: int) -> Slots:
        return cls(None, [width] * batch, [width - 1] * batch)

    @classmethod
    def prefix(cls, lengths: list[int], lengths_dev: torch.Tensor, width: int) -> Slots:
        """Row b's first ``lengths[b]`` slots live (``lengths_dev``: the same counts, (B,) on the device)."""
        cols = torch.arange(width, device=lengths_dev.device)  # (w,)
        return cls(cols[None, :] < lengths_dev[:, None], list(lengths), [n - 1 for n in lengths])  # (B, w)

    @classmethod
    def suffix(cls, lengths: list[int], valid: torch.Tensor, width: int) -> Slots:
        """Row b's last ``lengths[b]`` slots live, as ``valid`` (B, w) says on the device."""
        return cls(valid, list(lengths), [width - 1 if n else -1 for n in lengths])


class BatchState:
    """One model's batched cache: shared physical slots, a per-row live mask, per-row positions."""

    def __init__(self, model: ModelForward, batch: int, device: torch.device) -> None:
        self.model = model
        self.cache: RollbackCache = new_cache()
        self.device = device
        self.mask = torch.zeros((batch, 256), dtype=torch.bool, device=device)  # (B, capacity): True = live slot
        self.pos = torch.zeros(batch, dtype=torch.long, device=device)  # (B,) next position id = live slots so far
        self.length = 0  # physical slots in use
        self.live = [0] * batch  # host mirror of pos
        self.last_live = [-1] * batch  # per row: physical index of its last live slot
        self.compactions = 0

    @property
    def padded(self) -> bool:
        """Whether some row has a masked slot below ``length`` (from the host mirror). Without one the forward
        gets no mask, as transformers' sdpa path drops an all-true one."""
        return any(n < self.length for n in self.live)

    def _reserve(self, needed: int) -> None:
        if needed > self.mask.shape[1]:
            grown = self.mask.new_zeros((self.mask.shape[0], max(needed, 2 * self.mask.shape[1])))  # (B, cap')
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown

    def feed(self, tokens: torch.Tensor, slots: Slots, logits_to_keep: int) -> torch.Tensor:
        """Append (B, w) tokens whose live slots ``slots`` gives. Returns (B, logits_to_keep, V)."""
        width = tokens.shape[1]
        start = self.length
        self._reserve(start + width)
        if slots.valid is None:
            positions = self.pos[:, None] + torch.arange(width, device=self.device)  # (B, w)
            self.mask[:, start : start + width] = True
            self.pos += width
        else:
            # A live slot takes the next position; a dummy repeats the one before it (it is masked anyway).
            positions = (self.pos[:, None] + slots.valid.cumsum(dim=1) - 1).clamp_(min=0)  # (B, w)
            self.mask[:, start : start + width] = slots.valid
            self.pos += slots.valid.sum(dim=1)
        for b, (n, last) in enumerate(zip(slots.live, slots.last)):
            self.live[b] += n
            if last >= 0:
                self.last_live[b] = start + last
        self.length = start + width
        mask = self.mask[:, : self.length] if self.padded else None  # (B, L) | None: None = every slot live
        return self.model(tokens, self.cache, logits_to_keep, mask, positions)  # (B, logits_to_keep, V)

    def keep(self, start: int, counts: torch.Tensor, fed_counts: torch.Tensor | int, kept: list[int],
             fed: list[int]) -> None:
        """Row b keeps the first ``kept[b]`` of the ``fed[b]`` live slots it was fed from physical index
        ``start``; the rest are masked, and the physical tail that no row kept is rolled back. ``counts`` and
        ``fed_counts`` are ``kept`` and ``fed`` on the device ((B,), or one int for every row)."""
        if kept == fed:
            self._trim()  # dummy slots of a block no row filled (e.g. no lookup match anywhere)
            return
        cols = torch.arange(self.length - start, device=self.device)  # (w,)
        self.mask[:, start : self.length] &= cols[None, :] < counts[:, None]  # (B, w)
        self.pos -= fed_counts - counts  # (B,)
        for b, (n, m) in enumerate(zip(kept, fed)):
            if n < m:
                self.live[b] -= m - n
                self.last_live[b] = start + n - 1
        self._trim()

    def _trim(self) -> None:
        end = max(self.last_live) + 1
        if end < self.length:
            rollback(self.cache, self.length - end)
            self.length = end

    def compact_if_needed(self) -> None:
        """Keep dead slots from piling up: rejected drafts leave masked slots inside the cache wherever a longer
        row went on past them, and attention pays for every physical slot. Once they exceed COMPACT_MIN_SLOTS and
        COMPACT_FRACTION of the longest row, every row's live slots are gathered to the right end of a cache as
        long as that row (one gather per layer, amortised over the steps that made them; no sync)."""
        longest = max(self.live)
        if self.length - longest <= max(COMPACT_MIN_SLOTS, int(COMPACT_FRACTION * longest)):
            return
        live = self.mask[:, : self.length]  # (B, L)
        # A stable sort puts each row's masked slots first and its live ones after, in their order.
        order = torch.sort(live.to(torch.int8), dim=1, stable=True).indices[:, self.length - longest :]  # (B, L')
        self.cache.gather_slots(order)
        self.mask[:, :longest] = live.gather(1, order)  # (B, L')
        self.mask[:, longest : self.length] = False
        self.length = longest
        self.last_live = [longest - 1 if n else -1 for n in self.live]
        self.compactions += 1

    def select(self, rows: list[int], index: torch.Tensor) -> None:
        """Keep only these rows (the others finished); ``index``: ``rows`` on the device, (B',)."""
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]  # (B', capacity)
        self.pos = self.pos[index]  # (B',)
        self.live = [self.live[r] for r in rows]
        self.last_live = [self.last_live[r] for r in rows]
        self._trim()


def left_padded(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, Slots]:
    """(B, w) tokens, each row right-aligned with PAD in front, and their slots (built once per request)."""
    width = max(len(r) for r in rows)
    tokens = [[PAD] * (width - len(r)) + list(r) for r in rows]
    valid = [[False] * (width - len(r)) + [True] * len(r) for r in rows]
    slots = Slots.suffix([len(r) for r in rows], to_device(valid, device, torch.bool), width)
    return to_device(tokens, device), slots
