"""Batched drafting: a draft model proposing for every row at once, or a model-free drafter copied per row."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from specperf.engine.batch_cache import PAD, BatchState, Slots, left_padded
from specperf.engine.drafters.base import Drafter
from specperf.engine.forward import ModelForward
from specperf.engine.sampling import choose
from specperf.engine.transfer import to_device


@dataclass
class BatchProposal:
    """Drafted blocks of every row: tokens (B, kmax) (row b's first ``lengths[b]`` are its block), q or None."""

    tokens: torch.Tensor  # (B, kmax) int64 on the verifier's device
    lengths: list[int]
    lengths_dev: torch.Tensor  # (B,) the same lengths on the device
    probs: torch.Tensor | None = None  # (B, kmax, V) draft distribution q, when sampling with a model draft
    forwards: int = 0  # draft forwards spent on this step (each one processes every row)
    fed: list[int] = field(default_factory=list)  # per row: token positions its draft forwards processed

    @classmethod
    def empty(cls, batch: int, device: torch.device) -> BatchProposal:
        return cls(torch.empty((batch, 0), dtype=torch.long, device=device), [0] * batch,
                   torch.zeros(batch, dtype=torch.long, device=device))


class BatchModelDraft:
    """A draft model proposing for every row at once, with its own batched cache.

    Its first block feeds every row's prompt and first token (left-padded, built once). After that a step feeds
    the pending token of each row, preceded, where some row accepted its whole block, by a slot holding the last
    drafted token (the only committed token the draft has not seen then), masked in the other rows; both are on
    the device already.
    """

    def __init__(self, model: ModelForward, prompts: list[list[int]], device: torch.device, temperature: float,
                 generator: torch.Generator) -> None:
        self.state = BatchState(model, len(prompts), device)
        self.temperature, self.generator, self.device = temperature, generator, device
        self._prompts: list[list[int]] | None = prompts  # fed with the first block
        self._carry: tuple[torch.Tensor, torch.Tensor, list[bool]] | None = None  # (B,) token, (B,) live, host
        self._draft_start = 0

    def _unseen(self, pending: torch.Tensor) -> tuple[torch.Tensor, Slots]:
        """The committed tokens the draft has not seen, then the pending token: (B, w) and their slots."""
        if self._prompts is not None:
            tokens, slots = left_padded([p + [PAD] for p in self._prompts], self.device)  # (B, T+1)
            tokens[:, -1] = pending
            self._prompts = None
            return tokens, slots
        assert self._carry is not None  # set by accept() after every block
        carry, live, live_host = self._carry
        if not any(live_host):  # no row took its whole block: the pending token is all the draft has not seen
            return pending.unsqueeze(1), Slots.full(len(live_host), 1)  # (B, 1)
        tokens = torch.stack([carry, pending], dim=1)  # (B, 2)
        valid = torch.stack([live, torch.ones_like(live)], dim=1)  # (B, 2)
        return tokens, Slots.suffix([1 + int(x) for x in live_host], valid, 2)

    def propose(self, pending: torch.Tensor, budgets: list[int], lengths_dev: torch.Tensor) -> BatchProposal:
        """Draft max(budgets) tokens for every row after its ``pending`` token (B,); row b's block is its first
        ``budgets[b]`` (``lengths_dev`` on the device)."""
        kmax = max(budgets)
        tokens, slots = self._unseen(pending)  # (B, w)
        drafted, probs = [], []
        logits = self.state.feed(tokens, slots, 1)[:, -1]  # (B, V): the pending column, right-aligned
        self._draft_start = self.state.length
        for i in range(kmax):
            token, q = choose(logits, self.temperature, self.generator)  # (B,), (B, V) | None
            drafted.append(token)
            if q is not None:
                probs.append(q)
            if i + 1 < kmax:
                logits = self.state.feed(token.unsqueeze(1), Slots.full(len(budgets), 1), 1)[:, -1]  # (B, V)
        # Per row, the work its own block needed (as batch 1 counts it); rows with a shorter block ride along.
        fed = [n_live + n - 1 if n else 0 for n_live, n in zip(slots.live, budgets)]
        return BatchProposal(
            tokens=torch.stack(drafted, dim=1),  # (B, kmax)
            lengths=list(budgets), lengths_dev=lengths_dev,
            probs=torch.stack(probs, dim=1) if probs else None,  # (B, kmax, V)
            forwards=kmax, fed=fed,
        )

    def accept(self, proposal: BatchProposal, accepted: torch.Tensor, accepted_host: list[int]) -> None:
        """Row b accepted ``accepted[b]`` drafts of ``proposal`` ((B,) on the device, and on the host): forget the
        draft slots beyond them, and carry the last drafted token where the row took its whole block."""
        kmax = proposal.tokens.shape[1]
        fed_drafts = self.state.length - self._draft_start  # kmax - 1 single-token feeds, live in every row
        kept = [min(n, fed_drafts) for n in accepted_host]
        self.state.keep(self._draft_start, accepted.clamp(max=fed_drafts), fed_drafts, kept,
                        [fed_drafts] * len(kept))
        self._carry = (proposal.tokens[:, kmax - 1], accepted == kmax, [n == kmax for n in accepted_host])
        self.state.compact_if_needed()

    def select(self, rows: list[int], index: torch.Tensor) -> None:
        self.state.select(rows, index)
        if self._prompts is not None:  # rows that finished at their first token, before any block
            self._prompts = [self._prompts[r] for r in rows]
        if self._carry is not None:
            carry, live, live_host = self._carry
            self._carry = (carry[index], live[index], [live_host[r] for r in rows])


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
        blocks = [row.propose_ids(seq, n) if n else [] for row, seq, n in zip(self.rows, seqs, budgets)]
        width = max(1, max(len(b) for b in blocks))
        # One asynchronous copy: each row's length, then its block right-padded.
        packed = to_device([[len(b), *b, *[PAD] * (width - len(b))] for b in blocks], self.device)  # (B, 1 + w)
        return BatchProposal(packed[:, 1:], [len(b) for b in blocks], packed[:, 0])

    def accept(self, lengths_before: list[int], accepted: list[int]) -> None:
        """Row b's sequence was ``lengths_before[b]`` long when it drafted, and it accepted ``accepted[b]``."""
        for row, length, n in zip(self.rows, lengths_before, accepted):
            row.rollback(length + n)

    def select(self, rows: list[int], index: torch.Tensor) -> None:
        self.rows = [self.rows[r] for r in rows]
