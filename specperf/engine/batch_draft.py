"""Batched drafting: a draft model proposing for every row at once, or a model-free drafter copied per row."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from specperf.engine.batch_cache import BatchState, left_padded, right_padded
from specperf.engine.drafters.base import Drafter
from specperf.engine.sampling import choose


@dataclass
class BatchProposal:
    """Drafted blocks of every row: tokens (B, kmax) (row b's first ``lengths[b]`` are its block), q or None."""

    tokens: torch.Tensor  # (B, kmax) int64 on the verifier's device
    lengths: list[int]
    probs: torch.Tensor | None = None  # (B, kmax, V) draft distribution q, when sampling with a model draft
    forwards: int = 0  # draft forwards spent on this step (each one processes every row)
    fed: list[int] = field(default_factory=list)  # per row: token positions its draft forwards processed


class BatchModelDraft:
    """A draft model proposing for every row at once, with its own append-and-mask cache."""

    def __init__(self, model: torch.nn.Module, batch: int, device: torch.device, temperature: float,
                 generator: torch.Generator) -> None:
        self.state = BatchState(model, batch, device)
        self.temperature, self.generator, self.device = temperature, generator, device
        self._draft_start = 0

    def propose(self, seqs: list[list[int]], budgets: list[int]) -> BatchProposal:
        kmax = max(budgets)
        # Per row: the committed tokens the draft has not seen, then the pending token (the last of seq).
        # state.pos[b]: the live tokens row b's draft cache holds, i.e. the committed tokens it has seen.
        unseen = [seq[f:] for seq, f in zip(seqs, self.state.pos)]
        tokens, valid = left_padded(unseen, self.device)  # (B, w)
        drafted, probs = [], []
        logits = self.state.feed(tokens, valid, 1)[:, -1]  # (B, V): the pending column, right-aligned
        self._draft_start = self.state.length
        for i in range(kmax):
            token, q = choose(logits, self.temperature, self.generator)  # (B,), (B, V) | None
            drafted.append(token)
            if q is not None:
                probs.append(q)
            if i + 1 < kmax:
                logits = self.state.feed(token.unsqueeze(1), None, 1)[:, -1]  # (B, V)
        # Per row, the work its own block needed (as batch 1 counts it); rows with a shorter block ride along.
        fed = [len(u) + n - 1 if n else 0 for u, n in zip(unseen, budgets)]
        return BatchProposal(
            tokens=torch.stack(drafted, dim=1),  # (B, kmax)
            lengths=list(budgets),
            probs=torch.stack(probs, dim=1) if probs else None,  # (B, kmax, V)
            forwards=kmax, fed=fed,
        )

    def accept(self, seqs_before: list[list[int]], accepted: list[int]) -> None:
        """Row b accepted ``accepted[b]`` drafts after ``seqs_before[b]``: forget the draft slots beyond them."""
        fed_drafts = self.state.length - self._draft_start  # kmax - 1 single-token feeds, live in every row
        self.state.keep(self._draft_start, [min(n, fed_drafts) for n in accepted], [fed_drafts] * len(accepted))

    def select(self, rows: list[int]) -> None:
        self.state.select(rows)


class PerRowDraft:
    """Any model-free drafter (e.g. prompt lookup), one copy per row; drafting is host work."""

    def __init__(self, drafter: Drafter, prompt_lens: list[int], device: torch.device, temperature: float,
                 generator: torch.Generator) -> None:
        self.rows = [copy.deepcopy(drafter) for _ in prompt_lens]
        self.device = device
        host = torch.device("cpu")  # proposals stay on the host until the batch's one copy to the device
        for row, n in zip(self.rows, prompt_lens):
            row.start(n, device=host, temperature=temperature, generator=None)

    def propose(self, seqs: list[list[int]], budgets: list[int]) -> BatchProposal:
        blocks = [row.propose(seq, torch.tensor(seq[-1:]), n).tokens.tolist() if n else []
                  for row, seq, n in zip(self.rows, seqs, budgets)]
        width = max(1, max(len(b) for b in blocks))
        tokens, _ = right_padded(blocks, width)
        return BatchProposal(torch.tensor(tokens, dtype=torch.long).to(self.device), [len(b) for b in blocks])

    def accept(self, seqs_before: list[list[int]], accepted: list[int]) -> None:
        for row, seq, n in zip(self.rows, seqs_before, accepted):
            row.rollback(len(seq) + n)

    def select(self, rows: list[int]) -> None:
        self.rows = [self.rows[r] for r in rows]
