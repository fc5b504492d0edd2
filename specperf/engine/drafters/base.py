"""The drafter interface: propose a block, learn the outcome, roll back.

In the spirit of transformers' CandidateGenerator. The engine owns the committed sequence; a drafter sees it as a
host list ``seq`` whose last element is the pending token (committed, but not yet fed to the verifier).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass
class Proposal:
    """A drafted block.

    tokens: (k',) int64 on the verifier's device, 0 <= k' <= k.
    probs: (k', V) float32 draft distribution q at each drafted position, or None for a drafter without one
        (rejection sampling then treats q as one-hot on the drafted token).
    forwards: draft-model forward passes spent on this block.
    fed: token positions those forward passes processed (the unseen committed tokens, then one per draft step).
    """

    tokens: torch.Tensor
    probs: torch.Tensor | None = None
    forwards: int = 0
    fed: int = 0

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


class Drafter(ABC):
    """Proposes up to k tokens that continue the committed sequence."""

    name: ClassVar[str] = "drafter"
    provides_probs: ClassVar[bool] = False  # Proposal.probs is filled when sampling
    uses_model: ClassVar[bool] = False  # runs a neural network (and so has draft_calls)

    @abstractmethod
    def start(
        self,
        prompt_len: int,
        *,
        device: torch.device,
        temperature: float,
        generator: torch.Generator | None,
    ) -> None:
        """Begin a new request whose prompt is the first ``prompt_len`` elements of ``seq``."""

    @abstractmethod
    def propose(self, seq: list[int], pending: torch.Tensor, k: int) -> Proposal:
        """Draft up to ``k`` tokens after ``seq`` (host list; last element == ``pending``, a (1,) device tensor)."""

    def propose_ids(self, seq: list[int], k: int) -> list[int]:
        """The block :meth:`propose` drafts, as host token ids (for a drafter run per row on the host; a model-free
        drafter overrides it to skip the tensor)."""
        return [int(t) for t in self.propose(seq, torch.tensor(seq[-1:]), k).tokens.tolist()]

    def rollback(self, n_valid: int) -> None:  # noqa: B027 (optional: stateless drafters keep the no-op)
        """Only the first ``n_valid`` positions of the sequence are confirmed; forget any state beyond them."""

    def vocab_size(self) -> int | None:
        """Size of the drafter's vocabulary, or None when it has none of its own (it copies tokens)."""
        return None

    def describe(self) -> str:
        """A short label for reports."""
        return self.name
