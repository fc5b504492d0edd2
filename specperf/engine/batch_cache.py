"""The append-and-mask cache state of a batch (see :mod:`specperf.engine.batch`): one physical cache per model,
a (B, L) mask of live slots, and each row's logical length."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from specperf.engine.cache import RollbackCache, rollback
from specperf.engine.forward import cache_keyword, new_cache

PAD = 0  # token id fed in masked slots; never attended to, so any id in the vocabulary will do


class BatchState:
    """One model's batched cache: shared physical slots, a per-row live mask, per-row logical lengths."""

    def __init__(self, model: torch.nn.Module, batch: int, device: torch.device) -> None:
        self.model = model
        self.cache: RollbackCache = new_cache()
        self.device = device
        self.mask = torch.zeros((batch, 256), dtype=torch.long, device=device)  # (B, capacity): 1 = live slot
        self.length = 0  # physical slots in use
        self.pos = [0] * batch  # per row: live tokens so far (the next token's position id)
        self.last_live = [-1] * batch  # per row: physical index of its last live slot

    def _reserve(self, needed: int) -> None:
        if needed > self.mask.shape[1]:
            grown = self.mask.new_zeros((self.mask.shape[0], max(needed, 2 * self.mask.shape[1])))  # (B, cap')
            grown[:, : self.length] = self.mask[:, : self.length]
            self.mask = grown

    def feed(self, tokens: torch.Tensor, valid: list[list[bool]] | None, logits_to_keep: int) -> torch.Tensor:
        """Append (B, w) tokens; ``valid[b][j]`` False marks a dummy slot. Returns (B, logits_to_keep, V)."""
        batch, width = tokens.shape
        valid = valid or [[True] * width for _ in range(batch)]
        positions = []
        for b, row in enumerate(valid):
            p, ids = self.pos[b], []
            for j, live in enumerate(row):
                ids.append(p if live else max(p - 1, 0))  # a dummy reuses a real position; it is masked anyway
                p += live
                if live:
                    self.last_live[b] = self.length + j
            positions.append(ids)
            self.pos[b] = p
        self._reserve(self.length + width)
        self.mask[:, self.length : self.length + width] = torch.tensor(valid, dtype=torch.long).to(self.device)
        self.length += width
        kwargs = {cache_keyword(type(self.model)): self.cache}  # type: ignore[arg-type]  # classes hash by identity
        out = self.model(
            input_ids=tokens,  # (B, w)
            attention_mask=self.mask[:, : self.length],  # (B, L)
            position_ids=torch.tensor(positions, dtype=torch.long).to(self.device),  # (B, w)
            use_cache=True, logits_to_keep=logits_to_keep, **kwargs,
        )
        return out.logits  # (B, logits_to_keep, V)

    def keep(self, start: int, counts: list[int], live: list[int]) -> None:
        """Row b keeps the first ``counts[b]`` slots from physical index ``start`` (all live), of its ``live[b]``
        live slots there; the rest are masked, and the physical tail that no row kept is rolled back."""
        for b, (n, m) in enumerate(zip(counts, live)):
            if n < m:
                self.mask[b, start + n : self.length] = 0
                self.pos[b] -= m - n
                self.last_live[b] = start + n - 1
        self._trim()

    def _trim(self) -> None:
        end = max(self.last_live) + 1
        if end < self.length:
            rollback(self.cache, self.length - end)
            self.length = end

    def select(self, rows: list[int]) -> None:
        """Keep only these rows (the others finished)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]  # (B', capacity)
        self.pos = [self.pos[r] for r in rows]
        self.last_live = [self.last_live[r] for r in rows]
        self._trim()


def left_padded(rows: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, list[list[bool]]]:
    """(B, w) tokens, each row right-aligned with PAD in front, and the validity of every slot."""
    width = max(len(r) for r in rows)
    tokens = [[PAD] * (width - len(r)) + list(r) for r in rows]
    valid = [[False] * (width - len(r)) + [True] * len(r) for r in rows]
    return torch.tensor(tokens, dtype=torch.long).to(device), valid


def right_padded(rows: Sequence[Sequence[int]], width: int) -> tuple[list[list[int]], list[list[bool]]]:
    tokens = [list(r) + [PAD] * (width - len(r)) for r in rows]
    valid = [[True] * len(r) + [False] * (width - len(r)) for r in rows]
    return tokens, valid
